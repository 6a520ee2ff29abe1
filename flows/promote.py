"""Explicit promotion: the ``champion`` alias moves only to a version that earns it.

A candidate (default: the version under ``candidate``, set by the register stage) replaces the champion only if it
is feasible (``landing.violation_max <= tol``, default ``evaluate.feasibility_tol``) and beats the champion's
``landing.jsd`` (lower is better) by more than ``min_improvement``, or there is none. The decision and its reason
are recorded on the version (``promotion.*`` tags), on the registered model and in the note of the candidate's run;
before deciding, versions get lineage tags (params, DVC data hashes from ``dvc.lock``, git commit).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from cdcore.config import ConfigError, parse_params
from flows.layout import Layout
from flows.registry import _ppath, client as _client, params_raw, record_lineage

PRIMARY_METRIC = "landing.jsd"
CONSTRAINT_METRIC = "landing.violation_max"
DEFAULT_TOL = 1e-5
NOTE_TAG = "mlflow.note.content"


@dataclass
class Decision:
    model: str
    candidate: str
    promoted: bool
    outcome: str  # promoted | rejected | unchanged
    reason: str
    champion_before: Optional[str]
    champion_after: Optional[str]
    metric: str
    candidate_score: Optional[float]
    champion_score: Optional[float]
    constraint_metric: str
    candidate_violation: Optional[float]
    tol: float
    at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lineage_incomplete(mv, root: Path) -> bool:
    """Registered before `git commit` / `dvc commit` (the usual order of `cdcore run` then commit).

    Completing it later is only honest when the data file is still the one hashed at registration.
    """
    tags = mv.tags
    missing = tags.get("git.commit", "unknown") == "unknown" or (
        tags.get("dvc.lock") == "absent" and Layout(root).dvc_lock().is_file())
    if not missing:
        return False
    dataset, sha = tags.get("cdcore.dataset"), tags.get("data.sha256")
    if dataset and sha:
        data = Layout(root).data(dataset)
        return data.is_file() and hashlib.sha256(data.read_bytes()).hexdigest() == sha
    return True


# ----- the decision -------------------------------------------------------------------
def _score(client, mv, key: str) -> Optional[float]:
    """A metric of a version: its tag (set at registration), else the metric of the run that logged it."""
    if key in mv.tags:
        try:
            return float(mv.tags[key])
        except ValueError:
            pass
    if mv.run_id:
        try:
            value = client.get_run(mv.run_id).data.metrics.get(key)
        except Exception:
            value = None
        if value is not None:
            return float(value)
    return None


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _default_tol(root: Path, params_path: str | Path) -> float:
    try:
        raw = params_raw(_ppath(root, params_path))
    except Exception:
        raw = None
    return float(raw["evaluate"]["feasibility_tol"]) if raw else DEFAULT_TOL


def promote(name: str, version: Optional[str] = None, *, from_alias: str = "candidate", alias: str = "champion",
            metric: str = PRIMARY_METRIC, constraint_metric: str = CONSTRAINT_METRIC, tol: Optional[float] = None,
            min_improvement: float = 0.0, root: str | Path = ".", params_path: str | Path = "params.yaml",
            tracking_uri: Optional[str] = None, lineage: bool = True) -> Decision:
    """Decide whether ``version`` (default: the version under ``from_alias``) becomes ``alias``; record why.

    Returns the :class:`Decision`; raises ``ValueError`` only when there is no such model/version.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    root = Path(root).resolve()
    tol = _default_tol(root, params_path) if tol is None else float(tol)
    try:
        if version is None:
            mv = _alias_version(client, name, from_alias)
            if mv is None:
                raise ValueError(f"registered model {name!r} has no version under alias {from_alias!r}; "
                                 f"pass the version to promote")
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as e:
        raise ValueError(f"registered model {name!r} version {version}: {e.message}") from None
    version = str(mv.version)
    if lineage and _lineage_incomplete(mv, root):  # tagged at registration, completed once committed
        record_lineage(name, version, root, params_path, cl=client)
        mv = client.get_model_version(name, version)
    champ = _alias_version(client, name, alias)
    if champ is not None and lineage and _lineage_incomplete(champ, root) and str(champ.version) != version:
        try:
            record_lineage(name, str(champ.version), root, params_path, cl=client)
        except Exception:  # older versions may point at runs that are gone: lineage is best effort there
            pass

    cand_score, cand_viol = _score(client, mv, metric), _score(client, mv, constraint_metric)
    champ_score = _score(client, champ, metric) if champ is not None else None
    before = str(champ.version) if champ is not None else None
    if champ is not None and str(champ.version) == version:
        outcome, reason = "unchanged", f"version {version} is already {alias!r}"
    elif cand_score is None or cand_viol is None:
        missing = [k for k, v in ((metric, cand_score), (constraint_metric, cand_viol)) if v is None]
        outcome, reason = "rejected", f"version {version} has no {' / '.join(missing)} (tag or run metric)"
    elif not cand_viol <= tol:
        outcome, reason = "rejected", (f"version {version} violates the constraint: {constraint_metric} = "
                                       f"{cand_viol:.3g} > tol {tol:.3g}")
    elif champ is None:
        outcome, reason = "promoted", (f"no current {alias!r}; version {version} is feasible "
                                       f"({constraint_metric} = {cand_viol:.3g} <= {tol:.3g}), {metric} = {cand_score:.6g}")
    elif champ_score is None:
        outcome, reason = "promoted", (f"current {alias!r} version {before} has no {metric}; version {version} is "
                                       f"feasible with {metric} = {cand_score:.6g}")
    elif cand_score < champ_score - min_improvement:
        outcome, reason = "promoted", (f"version {version} beats {alias!r} version {before}: {metric} "
                                       f"{cand_score:.6g} < {champ_score:.6g}" +
                                       (f" - {min_improvement:g}" if min_improvement else "") +
                                       f", and {constraint_metric} = {cand_viol:.3g} <= {tol:.3g}")
    else:
        outcome, reason = "rejected", (f"version {version} does not beat {alias!r} version {before}: {metric} "
                                       f"{cand_score:.6g} >= {champ_score:.6g}" +
                                       (f" - {min_improvement:g}" if min_improvement else "") + " (lower is better)")

    promoted = outcome == "promoted"
    if promoted:
        client.set_registered_model_alias(name, alias, version)
        if champ is not None:
            client.set_model_version_tag(name, before, "promotion.replaced_by", version)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    decision = Decision(model=name, candidate=version, promoted=promoted, outcome=outcome, reason=reason,
                        champion_before=before, champion_after=version if promoted else before, metric=metric,
                        candidate_score=cand_score, champion_score=champ_score, constraint_metric=constraint_metric,
                        candidate_violation=cand_viol, tol=tol, at=at)
    _record(client, decision, mv, alias)
    return decision


def _record(client, d: Decision, mv, alias: str) -> None:
    for k, v in {"promotion.outcome": d.outcome, "promotion.reason": d.reason, "promotion.at": d.at,
                 "promotion.alias": alias, "promotion.champion_before": d.champion_before or "none",
                 "promotion.metric": d.metric, "promotion.tol": f"{d.tol:g}"}.items():
        client.set_model_version_tag(d.model, d.candidate, k, v)
    client.set_registered_model_tag(d.model, f"{alias}.last_decision", json.dumps(d.as_dict(), sort_keys=True))
    if d.promoted:
        client.set_registered_model_tag(d.model, f"{alias}.reason", d.reason)
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            note = run.data.tags.get(NOTE_TAG, "")
            line = f"{d.at} promotion to {alias!r}: {d.outcome.upper()}: {d.reason}"
            client.set_tag(mv.run_id, NOTE_TAG, (note + "\n\n" if note else "") + line)
        except Exception:  # the run may live in a store this client cannot write: tags above suffice
            pass


def promote_dataset(dataset: str, params_path: str | Path = "params.yaml", root: str | Path = ".",
                    **kwargs: Any) -> Decision:
    """Promote the candidate of one data set: the model name comes from params.yaml (``tracking.model_name``)."""
    root = Path(root).resolve()
    ppath = _ppath(root, params_path)
    raw = params_raw(ppath)
    if raw is None:
        raise ConfigError(f"{ppath}: file not found; run from the project folder or pass --params PATH")
    if dataset not in raw["datasets"] and dataset not in raw.get("finetune", {}):
        raise ConfigError(f"no data set {dataset!r} in {ppath}; defined: {', '.join(raw['datasets'])}")
    if kwargs.get("from_alias") is None:
        kwargs["from_alias"] = raw["tracking"]["alias"]
    return promote(parse_params(raw, source=str(ppath)).registered_name(dataset), root=root, params_path=ppath,
                   **kwargs)
