"""How good landing samples are: the data set's quality metric against held-out data, the train-vs-test floor
and the prior as the reference, feasibility, and the validation score that ``train.select: best_val`` uses."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from cdcore.constraints import Constraint
from cdcore.config import DynamicsCfg
from cdcore.dynamics import NoiseSchedule
from cdcore.methods.landing.sample import forward_end_prior, sample_quality_selector
from cdcore.methods.landing.train import SelectFn
from cdcore.metrics import jsd_latlon, mmd_rbf, violation_stats

Score = Callable[[np.ndarray, np.ndarray, np.ndarray], float]   # score(samples, test, reference), lower is better


def quality_metric(constraint_name: str, bins: int, benchmark: Optional[Any] = None) -> tuple[str, Score]:
    """(metric name, score): a benchmark's own metric, the earth JSD on S², else MMD."""
    if benchmark is not None:
        return (f"{benchmark.metric_name}:{benchmark.name}", benchmark.quality)
    if constraint_name == "sphere":
        return ("jsd_latlon", lambda a, t, r: jsd_latlon(a, t, bins))
    return ("mmd", lambda a, t, r: mmd_rbf(a, t))


def validation_selector(constraint: Constraint, splits: dict[str, torch.Tensor], schedule: NoiseSchedule,
                        dynamics: DynamicsCfg, score: Score, n: int, forward_prior: bool, seed: int,
                        device: torch.device) -> SelectFn:
    """Score ``n`` landing samples on the validation split, from the prior the sample stage will use."""
    val = splits["val"].double().cpu().numpy()
    ref = np.concatenate([splits["train"].double().cpu().numpy(), val])
    prior = None
    if forward_prior:
        prior = forward_end_prior(constraint, splits["train"], schedule, dynamics, pool=n, seed=seed + 3)
    return sample_quality_selector(constraint, schedule, dynamics, lambda x: score(x.double().cpu().numpy(), val, ref),
                                   n, prior=prior, seed=seed + 5, device=device)


def sampler_row(group: dict[str, Any], constraint: Constraint, metric: str, score: Score, test: np.ndarray,
                ref: np.ndarray, floor: float, seed: int, feasibility_tol: float) -> dict[str, Any]:
    """One sampler's scores; the prior's score (seeded) is the reference a model must beat."""
    x, dropped = group["x"], group["dropped"].astype(bool)
    kept = x[~dropped]
    finite = np.isfinite(kept).all(axis=1)
    viol = constraint.violation(torch.as_tensor(kept[finite], dtype=torch.float64)).numpy()
    try:
        prior = constraint.sample_prior(max(len(kept), 2), generator=torch.Generator().manual_seed(seed))
        reference = score(prior.double().numpy(), test, ref)
    except NotImplementedError:
        reference = float("nan")
    value = score(kept[finite], test, ref) if finite.sum() > 1 else float("nan")
    is_jsd = metric.startswith("jsd")
    row = {
        "n_samples": int(len(x)), "metric": metric,
        "score": value, "score_floor": floor, "score_reference": reference,
        "jsd": value if is_jsd else float("nan"), "jsd_floor": floor if is_jsd else float("nan"),
        "jsd_uniform": reference if is_jsd else float("nan"),
        **violation_stats(viol),
        "infeasible_rate": float((viol > feasibility_tol).mean()) if len(viol) else float("nan"),
        "drop_rate": float(dropped.mean()), "nonfinite": int((~finite).sum()),
        "nfe": int(group["nfe"]), "newton_iters": float(group["newton_iters_mean"]),
        "wall_s": float(group["wall_s"]), "peak_mem_mb": float(group["peak_mem_mb"]), "device": group["device"],
    }
    row["score_target"] = floor + 0.25 * (reference - floor)
    return row


def evaluation_rows(dataset: str, groups: dict[str, dict[str, Any]], splits: dict[str, np.ndarray],
                    constraint: Constraint, metric: str, score: Score, seed: int,
                    feasibility_tol: float) -> list[dict[str, Any]]:
    """A row per sampler, scored against the test split with the train split as the floor."""
    test, train = splits["test"], splits["train"]
    ref = np.concatenate([train, splits["val"]])
    floor = score(train, test, ref)
    return [{"dataset": dataset, "sampler": sampler,
             **sampler_row(g, constraint, metric, score, test, ref, floor, seed, feasibility_tol)}
            for sampler, g in groups.items()]


def kept_samples(groups: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each sampler's samples without the dropped ones (what the map shows)."""
    return {s: g["x"][~g["dropped"].astype(bool)] for s, g in groups.items()}
