"""The pipeline's stages as plain functions: load inputs, call cdcore, write atomically, log.

One code path whichever tool drives it: the Prefect flow wraps these in tasks,
the ``cdcore`` command calls them directly, and ``dvc.yaml`` runs that command.
Each output records a fingerprint of what produced it (params + input hashes),
so a re-run after a crash skips the stages that already finished.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import h5py
import numpy as np
import torch

from cdcore import constraints
from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore import benchmarks
from cdcore.config import BenchmarkDataset, FileDataset, Params, VmfDataset
from cdcore.data import io
from cdcore.data.earth import latlon_to_xyz
from cdcore.data.synthetic import vmf_mixture
from cdcore.methods.landing import build_model, forward_end_prior, sample_landing, sample_quality_selector, schedule_from, train_landing
from cdcore.profiling import resolve_device
from cdcore.metrics import jsd_latlon, violation_stats
from cdcore.profiling import measure
from cdcore.report import loss_curve, scatter_pca, sphere_map
from flows import tracking
from flows.lock import dataset_lock

log = logging.getLogger("cdcore")


@dataclass(frozen=True)
class Layout:
    """Where each stage writes, relative to the project folder ``root``."""

    root: Path

    def data(self, name: str) -> Path:
        return self.root / "data" / f"{name}.h5"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def model(self, name: str) -> Path:
        return self.model_dir(name) / "score.pt"

    def checkpoint(self, name: str, fingerprint: str) -> Path:
        return self.root / ".cache" / "checkpoints" / f"{name}-{fingerprint[:16]}.ckpt"

    def samples(self, name: str) -> Path:
        return self.root / "samples" / f"{name}.h5"

    def report(self, name: str) -> Path:
        return self.root / "reports" / "datasets" / f"{name}.json"

    def map_png(self, name: str) -> Path:
        return self.root / "reports" / "datasets" / f"{name}_map.png"

    def mirror_dir(self, name: str) -> Path:
        return self.root / "mirrors" / name

    def mirror(self, name: str) -> Path:
        return self.mirror_dir(name) / "namm.pt"

    def registry(self, name: str) -> Path:
        return self.root / "registry" / f"{name}.json"

    def summary(self) -> Path:
        return self.root / "reports" / "summary.json"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def constraint_ref(ds: Any) -> dict[str, Any]:
    """A data set's constraint as recorded in its data file: the library name and the constructor arguments
    (only benchmark data sets have any)."""
    return {"constraint": ds.constraint, "constraint_kwargs": getattr(ds, "constraint_kwargs", {})}


def constraint_for(params: Params, name: str) -> constraints.Constraint:
    return constraint_of(constraint_ref(params.dataset(name)))


def constraint_of(attrs: dict[str, Any]) -> constraints.Constraint:
    """The constraint a data file or model was made with: its name and constructor arguments (files written
    before the arguments were recorded have none)."""
    return constraints.make(attrs["constraint"], **dict(attrs.get("constraint_kwargs") or {}))


def method_stages(params: Params, name: str):
    """The stage module of a data set's method other than landing (flows/stages_namm.py, stages_dual.py), or None."""
    method = params.method_for(name)
    if method == "namm":
        from flows import stages_namm

        return stages_namm
    if method == "dual":
        from flows import stages_dual

        return stages_dual
    return None


# ----- fingerprints: what each stage's output depends on ---------------------
def fp_data(params: Params, name: str, root: Path) -> str:
    if (impl := method_stages(params, name)) is not None:
        return impl.fp_data(params, name, root)
    ds = params.dataset(name)
    src = io.sha256_file(root / ds.path) if isinstance(ds, FileDataset) and (root / ds.path).is_file() else None
    return _hash(["data", _dump(ds), _dump(params.split), params.seed, src, io.SCHEMA_VERSION])


def fp_train(params: Params, name: str, root: Path) -> str:
    if (impl := method_stages(params, name)) is not None:
        return impl.fp_train(params, name, root)
    return _hash(["train", io.sha256_file(Layout(root).data(name)), _dump(params.schedule_for(name)),
                  _dump(params.dynamics_for(name)), _dump(params.model), _dump(params.train_for(name)), params.seed])


def fp_mirror(params: Params, name: str, root: Path) -> str:
    from flows import stages_namm

    if params.method_for(name) != "namm":
        return _hash(["no-mirror", params.method_for(name)])
    return stages_namm.fp_mirror(params, name, root)


def fp_sample(params: Params, name: str, root: Path) -> str:
    if (impl := method_stages(params, name)) is not None:
        return impl.fp_sample(params, name, root)
    lay = Layout(root)
    prior = params.prior_for(name)
    data = io.sha256_file(lay.data(name)) if prior == "forward" else None
    return _hash(["sample", io.sha256_file(lay.model(name)), _dump(params.sample),
                  _dump(params.dynamics_for(name)), params.seed] + ([prior, data] if prior != "analytic" else []))


def _stored_fingerprint(path: Path) -> Optional[str]:
    if not path.exists():
        return None
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                return f.attrs.get("fingerprint")
        if path.suffix == ".pt":
            return load_checkpoint(path)["meta"]["fingerprint"]
        if path.suffix == ".json":
            return json.loads(path.read_text()).get("fingerprint")
    except Exception:  # unreadable outputs are simply redone
        return None
    return None


def _up_to_date(path: Path, fingerprint: str, stage: str, name: str) -> bool:
    if _stored_fingerprint(path) == fingerprint:
        log.info("%s[%s]: up to date (%s), skipped", stage, name, path)
        return True
    return False


# ----- stages ------------------------------------------------------------------
def _locked(fn: Callable) -> Callable:
    """Run the stage holding its data set's lock in ``root`` (flows.lock): one writer per data set and folder.

    Re-entrant in one process, so the flow's lock around a data set's whole chain and this one nest.
    """
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        with dataset_lock(bound.arguments["root"], bound.arguments["name"]):
            return fn(*args, **kwargs)

    return wrapper


@_locked
def run_data(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Read or generate one data set, check it against its constraint, split it, write HDF5."""
    root = Path(root)
    out = Layout(root).data(name)
    io.remove_stale_temps(out.parent)
    if (impl := method_stages(params, name)) is not None:
        return impl.run_data(params, name, root, parent_run_id)
    fp = fp_data(params, name, root)
    if _up_to_date(out, fp, "data", name):
        return out
    ds = params.dataset(name)
    constraint = constraint_for(params, name)
    attrs: dict[str, Any] = {**constraint_ref(ds), "constraint_spec": constraint.spec(), "dim": constraint.dim,
                             "seed": params.seed, "split": _dump(params.split), "generator": _dump(ds), "fingerprint": fp}
    if isinstance(ds, VmfDataset):
        x, means = vmf_mixture(ds.n, ds.components, ds.kappa, seed=params.seed)
        attrs.update(source="synthetic:vmf", source_sha256="", means=means.tolist())
    elif isinstance(ds, BenchmarkDataset):
        from flows.bench import default_paths

        x = np.concatenate(benchmarks.get(ds.benchmark).load(params.seed, default_paths(root)))
        attrs.update(source=f"benchmark:{ds.benchmark}", source_sha256="")
    else:
        path = root / ds.path
        raw, kind = io.load_points(path, ds.format)
        x = latlon_to_xyz(raw) if kind == "latlon" else raw
        if x.shape[1] != constraint.dim:
            raise io.DataError(f"{path}: points have {x.shape[1]} coordinates but constraint {ds.constraint!r} "
                               f"needs {constraint.dim}; fix `constraint` or the file")
        viol = constraint.violation(torch.as_tensor(x, dtype=torch.float64)).numpy()
        bad = viol > ds.tolerance
        if bad.any():
            raise io.DataError(
                f"{path}: {int(bad.sum())} of {len(x)} points violate constraint {ds.constraint!r} beyond tolerance "
                f"{ds.tolerance:g} (worst {viol.max():.3g} at row {int(viol.argmax())}). Project the points onto the set "
                f"before use, or raise datasets.{name}.tolerance if the error is expected")
        attrs.update(source=str(ds.path), source_sha256=io.sha256_file(path))
    idx = io.split_indices(len(x), (params.split.train, params.split.val, params.split.test), params.seed)
    io.write_dataset(out, {k: x[v] for k, v in idx.items()}, attrs)
    with tracking.stage_run("data", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, **{f"data.{k}": v for k, v in _dump(ds).items()}, "seed": params.seed})
            tracking.log_metrics({f"n_{k}": len(v) for k, v in idx.items()})
            tracking.log_artifact(out, "data")
    log.info("data[%s]: %d points -> %s", name, len(x), out)
    return out


def _tensors(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    splits, attrs = io.read_dataset(path)
    return {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in splits.items()}, attrs


@_locked
def run_train(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None,
              on_progress: Optional[Callable[[int, dict], None]] = None) -> Path:
    """Fit the landing score network on constrained forward paths; resumable from its checkpoint."""
    root = Path(root)
    lay = Layout(root)
    out = lay.model(name)
    io.remove_stale_temps(out.parent)
    if (impl := method_stages(params, name)) is not None:
        return impl.run_train(params, name, root, parent_run_id, on_progress=on_progress)
    fp = fp_train(params, name, root)
    if _up_to_date(out, fp, "train", name):
        return out
    device = resolve_device(params.train.device)
    splits, attrs = _tensors(lay.data(name), device)
    constraint = constraint_of(attrs)
    schedule = schedule_from(params.schedule_for(name))
    dynamics = params.dynamics_for(name)
    ckpt = lay.checkpoint(name, fp)
    for stale in ckpt.parent.glob(f"{name}-*.ckpt"):
        if stale != ckpt:
            stale.unlink()

    with tracking.stage_run("train", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, "device": str(device), "seed": params.seed,
                                 **tracking.flatten({"schedule": _dump(params.schedule_for(name)), "dynamics": _dump(dynamics),
                                                     "model": _dump(params.model), "train": _dump(params.train_for(name))})})

        def progress(step: int, row: dict) -> None:
            if run:
                tracking.log_metrics({k: v for k, v in row.items() if k != "step"}, step=step)
            if on_progress:
                on_progress(step, row)

        tcfg = params.train_for(name)
        select = validation_selector(params, name, attrs, splits, constraint, schedule, dynamics, device) \
            if tcfg.select == "best_val" else None
        result = train_landing(constraint, splits["train"], splits["val"], schedule, dynamics, params.model, tcfg,
                               seed=params.seed, device=device, checkpoint_path=ckpt, on_progress=progress,
                               select=select)
        meta = {"fingerprint": fp, "dataset": name, "dim": constraint.dim, "constraint": attrs["constraint"],
                "constraint_kwargs": attrs.get("constraint_kwargs") or {},
                "schedule": _dump(params.schedule_for(name)), "dynamics": _dump(dynamics), "model": _dump(params.model),
                "seed": params.seed, "resumed_from": result.resumed_from, "train_wall_s": result.wall_s,
                "selected_step": result.best_step or tcfg.steps}
        save_checkpoint(out, {"state_dict": result.model.state_dict(), "meta": meta, "history": result.history})
        io.write_text_atomic(lay.model_dir(name) / "history.json", json.dumps(result.history, indent=1))
        loss_curve(lay.model_dir(name) / "loss.png", result.history, f"{name}: landing path NLL")
        if run:
            tracking.log_metrics({"train_wall_s": result.wall_s, "resumed_from": result.resumed_from,
                                  "selected_step": meta["selected_step"]})
            tracking.log_artifact(lay.model_dir(name) / "loss.png", "plots")
    log.info("train[%s]: %d steps in %.1fs -> %s", name, params.train_for(name).steps, result.wall_s, out)
    return out


def validation_selector(params: Params, name: str, attrs: dict[str, Any], splits: dict[str, torch.Tensor],
                        constraint: constraints.Constraint, schedule, dynamics, device: torch.device):
    """``train.select: best_val``: score each validation point's landing samples on the validation split in the
    data set's own metric, from the prior the sample stage will use."""
    _, metric = quality_metric(params, name, attrs["constraint"])
    val = splits["val"].double().cpu().numpy()
    ref = np.concatenate([splits["train"].double().cpu().numpy(), val])
    n = params.train_for(name).select_samples
    prior = None
    if params.prior_for(name) == "forward":
        prior = forward_end_prior(constraint, splits["train"], schedule, dynamics, pool=n, seed=params.seed + 3)
    return sample_quality_selector(constraint, schedule, dynamics, lambda x: metric(x.double().cpu().numpy(), val, ref),
                                   n, prior=prior, seed=params.seed + 5, device=device)


def load_model(path: Path, device: torch.device | str = "cpu"):
    """Rebuild a score model from a weights-only checkpoint (no pickled objects)."""
    from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg

    state = load_checkpoint(path, map_location=device)
    meta = state["meta"]
    sched_cfg, dyn_cfg = ScheduleCfg(**meta["schedule"]), DynamicsCfg(**meta["dynamics"])
    schedule = schedule_from(sched_cfg)
    model = build_model(meta["dim"], schedule, dyn_cfg, ModelCfg(**meta["model"]))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), schedule, dyn_cfg, meta


@_locked
def run_sample(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Draw samples with every configured sampler (landing and the projection baseline) from one model."""
    root = Path(root)
    lay = Layout(root)
    out = lay.samples(name)
    io.remove_stale_temps(out.parent)
    if (impl := method_stages(params, name)) is not None:
        return impl.run_sample(params, name, root, parent_run_id)
    fp = fp_sample(params, name, root)
    if _up_to_date(out, fp, "sample", name):
        return out
    device = resolve_device(params.sample.device)
    model, schedule, dyn_cfg, meta = load_model(lay.model(name), device)
    constraint = constraint_of(meta)
    prior = None
    if params.prior_for(name) == "forward":
        train = _tensors(lay.data(name), device)[0]["train"]
        prior = forward_end_prior(constraint, train, schedule, dyn_cfg, pool=params.sample.n_samples,
                                  seed=params.seed + 3)
    groups: dict[str, dict[str, Any]] = {}
    with tracking.stage_run("sample", name, parent_run_id) as run:
        for sampler in params.sample.samplers:
            handling = "landing" if sampler == "landing" else "projection"
            with measure(device) as m:
                res = sample_landing(model, constraint, schedule, dyn_cfg, params.sample.n_samples, handling=handling,
                                     seed=params.seed + 1, device=device, batch_size=params.sample.batch_size,
                                     prior=prior)
            x = res.x.float().cpu().numpy()
            groups[sampler] = {"x": x, "dropped": res.dropped.cpu().numpy(), "nfe": res.nfe,
                               "newton_iters_mean": float(res.newton_iters.float().mean()), "wall_s": m.wall_s,
                               "peak_mem_mb": m.peak_mem_mb, "device": str(device)}
            log.info("sample[%s/%s]: %d samples in %.2fs, drop rate %.4f", name, sampler, len(x), m.wall_s, res.drop_rate)
            if run:
                tracking.log_metrics({f"{sampler}.wall_s": m.wall_s, f"{sampler}.drop_rate": res.drop_rate,
                                      f"{sampler}.peak_mem_mb": m.peak_mem_mb})
        io.write_samples(out, groups, {"fingerprint": fp, "dataset": name, "constraint": meta["constraint"],
                                       "device": str(device)})
        if run:
            tracking.log_params({"dataset": name, "device": str(device), "prior": params.prior_for(name),
                                 **tracking.flatten({"sample": _dump(params.sample)})})
    return out


def quality_metric(params: Params, name: str, constraint_name: str) -> tuple[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]]:
    """(metric name, score(samples, test, reference)): the benchmark's own metric, the earth JSD on S², else MMD."""
    ds = params.dataset(name)
    if isinstance(ds, BenchmarkDataset):
        b = benchmarks.get(ds.benchmark)
        return (f"{b.metric_name}:{b.name}", b.quality)
    if constraint_name == "sphere":
        bins = params.evaluate.bins
        return ("jsd_latlon", lambda a, t, r: jsd_latlon(a, t, bins))
    from cdcore.metrics import mmd_rbf

    return ("mmd", lambda a, t, r: mmd_rbf(a, t))


@_locked
def run_mirror(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Fit the NAMM mirror maps g, f (method namm); a data set of another method records that it needs none."""
    from flows import stages_namm

    root = Path(root)
    io.remove_stale_temps(Layout(root).mirror_dir(name))
    if params.method_for(name) != "namm":
        return stages_namm.write_identity(params, name, root)
    return stages_namm.run_mirror(params, name, root, parent_run_id)


@_locked
def run_evaluate(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> list[dict]:
    """Score every sampler against the test split, with the train-vs-test floor and the prior as reference."""
    root = Path(root)
    lay = Layout(root)
    io.remove_stale_temps(lay.report(name).parent)
    if (impl := method_stages(params, name)) is not None:
        return impl.run_evaluate(params, name, root, parent_run_id)
    splits, attrs = io.read_dataset(lay.data(name))
    groups, sattrs = io.read_samples(lay.samples(name))
    constraint = constraint_of(attrs)
    test, train = splits["test"], splits["train"]
    ref = np.concatenate([train, splits["val"]])
    metric, score = quality_metric(params, name, attrs["constraint"])
    floor = score(train, test, ref)
    rows = []
    for sampler, g in groups.items():
        x, dropped = g["x"], g["dropped"].astype(bool)
        kept = x[~dropped]
        finite = np.isfinite(kept).all(axis=1)
        viol = constraint.violation(torch.as_tensor(kept[finite], dtype=torch.float64)).numpy()
        try:
            prior = constraint.sample_prior(max(len(kept), 2), generator=torch.Generator().manual_seed(params.seed))
            reference = score(prior.double().numpy(), test, ref)
        except NotImplementedError:
            reference = float("nan")
        value = score(kept[finite], test, ref) if finite.sum() > 1 else float("nan")
        is_jsd = metric.startswith("jsd")
        row = {
            "dataset": name, "sampler": sampler, "n_samples": int(len(x)), "metric": metric,
            "score": value, "score_floor": floor, "score_reference": reference,
            "jsd": value if is_jsd else float("nan"), "jsd_floor": floor if is_jsd else float("nan"),
            "jsd_uniform": reference if is_jsd else float("nan"),
            **violation_stats(viol),
            "infeasible_rate": float((viol > params.evaluate.feasibility_tol).mean()) if len(viol) else float("nan"),
            "drop_rate": float(dropped.mean()), "nonfinite": int((~finite).sum()),
            "nfe": int(g["nfe"]), "newton_iters": float(g["newton_iters_mean"]),
            "wall_s": float(g["wall_s"]), "peak_mem_mb": float(g["peak_mem_mb"]), "device": g["device"],
        }
        row["score_target"] = floor + 0.25 * (reference - floor)
        rows.append(row)
    shown = {r["sampler"]: groups[r["sampler"]]["x"][~groups[r["sampler"]]["dropped"].astype(bool)] for r in rows}
    scores = {r["sampler"]: r["score"] for r in rows}
    if attrs["constraint"] == "sphere" and constraint.dim == 3:
        sphere_map(lay.map_png(name), test, shown, title=f"{name}: held-out data vs samples", scores=scores)
    else:
        scatter_pca(lay.map_png(name), test, shown, title=f"{name}: held-out data vs samples (2 principal components)",
                    scores=scores)
    io.write_text_atomic(lay.report(name), json.dumps({"dataset": name, "rows": rows}, indent=1))
    with tracking.stage_run("evaluate", name, parent_run_id) as run:
        if run:
            for r in rows:
                tracking.log_metrics({f"{r['sampler']}.{k}": v for k, v in r.items() if isinstance(v, (int, float))})
            tracking.log_artifact(lay.map_png(name), "plots")
            tracking.log_artifact(lay.report(name), "reports")
    return rows


@_locked
def run_register(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Optional[str]:
    """Register the trained sampler in MLflow with its metrics, and point the alias at it."""
    lay = Layout(Path(root))
    version = None
    if params.tracking.register_model:
        report = json.loads(lay.report(name).read_text())
        metrics = {f"{r['sampler']}.{k}": r[k] for r in report["rows"] for k in ("score", "jsd", "violation_max", "drop_rate")}
        method = params.method_for(name)
        shape = None
        if method == "namm":
            h, w, c = load_checkpoint(lay.model(name))["meta"]["shape"]
            shape = (c, h, w)
        version = tracking.register_sampler(lay.model(name), params.tracking, name, metrics, parent_run_id,
                                            name=params.registered_name(name), code=tracking.sampler_code(method),
                                            output_shape=shape)
        if version is not None:
            from flows.promote import record_lineage

            # params, dvc.lock hashes and git commit on every version, so any version can be traced back
            record_lineage(params.registered_name(name), version, root=root, dataset=name)
    record = {"dataset": name, "model": params.registered_name(name),
              "version": version, "alias": params.tracking.alias if version else None,
              "uri": f"models:/{params.registered_name(name)}@{params.tracking.alias}"
              if version else None}
    io.write_text_atomic(lay.registry(name), json.dumps(record, indent=1))
    return version


def run_report(params: Params, root: Path, names: Optional[list[str]] = None) -> dict:
    """Collect every data set's rows into reports/summary.json and a Markdown table."""
    lay = Layout(root)
    names = names or list(params.datasets)
    rows = []
    for n in names:
        path = lay.report(n)
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run `cdcore evaluate --dataset {n}` first")
        rows += json.loads(path.read_text())["rows"]
    finetune = {}
    for n, exp in params.finetune.items():
        path = lay.root / "reports" / "finetune" / f"{n}.json"
        if exp.base in names and path.exists():
            finetune[n] = json.loads(path.read_text())
    summary = {"method": params.method, "rows": rows, "finetune": finetune}
    io.write_text_atomic(lay.summary(), json.dumps(summary, indent=1))
    text = format_table(rows) + "\n"
    if finetune:
        from flows.finetune import format_rows

        for n, rep in finetune.items():
            text += f"\n### fine-tuning {n} (from {rep['source']})\n\n{format_rows(rep['rows'])}\n"
    io.write_text_atomic(lay.root / "reports" / "summary.md", text)
    return summary


def format_table(rows: list[dict]) -> str:
    cols = [("dataset", "{}"), ("sampler", "{}"), ("metric", "{}"), ("score", "{:.3f}"), ("score_floor", "{:.3f}"),
            ("score_reference", "{:.3f}"),
            ("violation_max", "{:.1e}"), ("drop_rate", "{:.4f}"), ("nfe", "{}"), ("newton_iters", "{:.1f}"),
            ("wall_s", "{:.2f}"), ("peak_mem_mb", "{:.0f}")]
    head = "| " + " | ".join(c for c, _ in cols) + " | detail |"
    sep = "|" + "|".join("---" for _ in cols) + "|---|"
    body = ["| " + " | ".join(f.format(r[c]) for c, f in cols) + f" | {_detail(r)} |" for r in rows]
    return "\n".join([head, sep, *body])


def _detail(r: dict) -> str:
    """What the method promises, per row: the feasibility of NAMM samples, the class shares of dual training."""
    if r.get("method") == "namm":
        return f"constraint distance mean {r['constraint_mean']:.2g} (held-out data {r['data_constraint_mean']:.2g})"
    if r.get("method") == "dual":
        shares = ", ".join(f"{k.split('/')[1]}: {v:.3f}" for k, v in r.items() if k.startswith("share/"))
        return f"corrected shares {shares} (uniform 0.100)"
    return f"target {r['score_target']:.3f}" if r.get("score_target") == r.get("score_target") else ""


def clean(root: Path) -> None:
    """Remove every stage output (not the MLflow store): for a from-scratch run.

    ``.cache/locks`` stays: deleting a lock file another run holds would let a third run take a new one.
    """
    for sub in ("data", "mirrors", "models", "samples", "reports", "registry", ".cache"):
        p = Path(root) / sub
        if p.is_dir() and sub == ".cache":
            for child in p.iterdir():
                if child.name != "locks":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif p.exists():
            shutil.rmtree(p)
