"""The stages of ``method: landing``: data -> train -> sample -> evaluate (the mirror stage records that it
needs none). The caching, locking and MLflow runs are flows/cache.py's; the maths is cdcore's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdcore import benchmarks
from cdcore.checkpoint import save_checkpoint
from cdcore.config import BenchmarkDataset, FileDataset, Params, VmfDataset
from cdcore.constraints import Constraint, from_record
from cdcore.data import io
from cdcore.data.errors import DataError
from cdcore.data.checks import load_checked_points
from cdcore.data.synthetic import vmf_mixture
from cdcore.methods.landing import forward_end_prior, sample_landing, schedule_from, train_landing
from cdcore.methods.landing import evaluate
from cdcore.methods.landing.io import load_model, read_splits, samples_group
from cdcore.profiling import measure, resolve_device
from cdcore.report import loss_curve
from cdcore.report.landing import samples_map
from flows import tracking
from flows.cache import Stage, digest, plain, stage
from flows.layout import Layout

log = logging.getLogger("cdcore")


# ----- fingerprints: what each stage's output depends on -------------------------------------------------------
def data_path(ds: FileDataset, name: str, root: Path) -> Path:
    """A data set's file, refused when it lies outside the project folder and the user did not opt in."""
    path = Path(root) / ds.path
    if not ds.outside_project and not path.resolve().is_relative_to(Path(root).resolve()):
        raise DataError(f"datasets.{name}.path: {ds.path} is outside the project folder {Path(root).resolve()}; "
                        f"copy the file into it, or set datasets.{name}.outside_project: true to read it there")
    return path


def fp_data(params: Params, name: str, root: Path) -> str:
    ds = params.dataset(name)
    path = data_path(ds, name, root) if isinstance(ds, FileDataset) else None
    src = io.sha256_file(path) if path is not None and path.is_file() else None
    return digest(["data", plain(ds), plain(params.split), params.seed, src, io.SCHEMA_VERSION])


def fp_train(params: Params, name: str, root: Path) -> str:
    return digest(["train", io.sha256_file(Layout(root).data(name)), plain(params.schedule_for(name)),
                   plain(params.dynamics_for(name)), plain(params.model), plain(params.train_for(name)), params.seed])


def fp_sample(params: Params, name: str, root: Path) -> str:
    lay = Layout(root)
    prior = params.prior_for(name)
    data = io.sha256_file(lay.data(name)) if prior == "forward" else None
    return digest(["sample", io.sha256_file(lay.model(name)), plain(params.sample),
                   plain(params.dynamics_for(name)), params.seed] + ([prior, data] if prior != "analytic" else []))


# ----- stages --------------------------------------------------------------------------------------------------------
def constraint_ref(ds: Any) -> dict[str, Any]:
    """A data set's constraint as its data file records it: the library name and the constructor arguments
    (only benchmark data sets have any)."""
    return {"constraint": ds.constraint, "constraint_kwargs": getattr(ds, "constraint_kwargs", {})}


def _points(params: Params, name: str, root: Path, constraint: Constraint) -> tuple[np.ndarray, dict[str, Any]]:
    """The data set's points and the record of where they came from."""
    ds = params.dataset(name)
    if isinstance(ds, VmfDataset):
        x, means = vmf_mixture(ds.n, ds.components, ds.kappa, seed=params.seed)
        return x, {"source": "synthetic:vmf", "source_sha256": "", "means": means.tolist()}
    if isinstance(ds, BenchmarkDataset):
        from flows.layout import default_paths

        x = np.concatenate(benchmarks.get(ds.benchmark).load(params.seed, default_paths(root)))
        return x, {"source": f"benchmark:{ds.benchmark}", "source_sha256": ""}
    path = data_path(ds, name, root)
    x = load_checked_points(path, ds.format, constraint, ds.constraint, ds.tolerance, name)
    return x, {"source": str(ds.path), "source_sha256": io.sha256_file(path)}


@stage("data", Layout.data, fp_data)
def run_data(params: Params, st: Stage) -> Path:
    """Read or generate one data set, check it against its constraint, split it, write HDF5."""
    ds = params.dataset(st.name)
    constraint = from_record(constraint_ref(ds))
    attrs: dict[str, Any] = {**constraint_ref(ds), "constraint_spec": constraint.spec(), "dim": constraint.dim,
                             "seed": params.seed, "split": plain(params.split), "generator": plain(ds),
                             "fingerprint": st.fingerprint}
    x, source = _points(params, st.name, st.root, constraint)
    attrs.update(source)
    idx = io.split_indices(len(x), (params.split.train, params.split.val, params.split.test), params.seed)
    io.write_dataset(st.out, {k: x[v] for k, v in idx.items()}, attrs)
    st.log_params({"dataset": st.name, **{f"data.{k}": v for k, v in plain(ds).items()}, "seed": params.seed})
    st.log_metrics({f"n_{k}": len(v) for k, v in idx.items()})
    st.log_artifact(st.out, "data")
    log.info("data[%s]: %d points -> %s", st.name, len(x), st.out)
    return st.out


def metric_of(params: Params, name: str, constraint_name: str) -> tuple[str, evaluate.Score]:
    ds = params.dataset(name)
    bench = benchmarks.get(ds.benchmark) if isinstance(ds, BenchmarkDataset) else None
    return evaluate.quality_metric(constraint_name, params.evaluate.bins, bench)


def validation_selector(params: Params, name: str, attrs: dict[str, Any], splits: dict[str, torch.Tensor],
                        constraint: Constraint, schedule, dynamics, device: torch.device):
    """``train.select: best_val``: the data set's own metric on the validation split, from the sample stage's prior."""
    _, score = metric_of(params, name, attrs["constraint"])
    return evaluate.validation_selector(constraint, splits, schedule, dynamics, score,
                                        params.train_for(name).select_samples, params.prior_for(name) == "forward",
                                        params.seed, device)


@stage("train", Layout.model, fp_train)
def run_train(params: Params, st: Stage) -> Path:
    """Fit the landing score network on constrained forward paths; resumable from its checkpoint."""
    name, tcfg, dynamics = st.name, params.train_for(st.name), params.dynamics_for(st.name)
    device = resolve_device(params.train.device)
    splits, attrs = read_splits(st.layout.data(name), device)
    constraint = from_record(attrs)
    schedule = schedule_from(params.schedule_for(name))
    st.log_params({"dataset": name, "device": str(device), "seed": params.seed,
                   **tracking.flatten({"schedule": plain(params.schedule_for(name)), "dynamics": plain(dynamics),
                                       "model": plain(params.model), "train": plain(tcfg)})})
    select = validation_selector(params, name, attrs, splits, constraint, schedule, dynamics, device) \
        if tcfg.select == "best_val" else None
    result = train_landing(constraint, splits["train"], splits["val"], schedule, dynamics, params.model, tcfg,
                           seed=params.seed, device=device, checkpoint_path=st.checkpoint(), on_progress=st.progress(),
                           select=select)
    meta = {"fingerprint": st.fingerprint, "dataset": name, "dim": constraint.dim, "constraint": attrs["constraint"],
            "constraint_kwargs": attrs.get("constraint_kwargs") or {},
            "schedule": plain(params.schedule_for(name)), "dynamics": plain(dynamics), "model": plain(params.model),
            "seed": params.seed, "resumed_from": result.resumed_from, "train_wall_s": result.wall_s,
            "selected_step": result.best_step or tcfg.steps}
    save_checkpoint(st.out, {"state_dict": result.model.state_dict(), "meta": meta, "history": result.history})
    st.history(result.history, lambda png: loss_curve(png, result.history, f"{name}: landing path NLL"))
    st.log_metrics({"train_wall_s": result.wall_s, "resumed_from": result.resumed_from,
                    "selected_step": meta["selected_step"]})
    log.info("train[%s]: %d steps in %.1fs -> %s", name, tcfg.steps, result.wall_s, st.out)
    return st.out


@stage("sample", Layout.samples, fp_sample)
def run_sample(params: Params, st: Stage) -> Path:
    """Draw samples with every configured sampler (landing and the projection baseline) from one model."""
    name, cfg = st.name, params.sample
    device = resolve_device(cfg.device)
    model, schedule, dyn_cfg, meta = load_model(st.layout.model(name), device)
    constraint = from_record(meta)
    prior = None
    if params.prior_for(name) == "forward":
        train = read_splits(st.layout.data(name), device)[0]["train"]
        prior = forward_end_prior(constraint, train, schedule, dyn_cfg, pool=cfg.n_samples, seed=params.seed + 3)
    groups: dict[str, dict[str, Any]] = {}
    for sampler in cfg.samplers:
        with measure(device) as m:
            res = sample_landing(model, constraint, schedule, dyn_cfg, cfg.n_samples,
                                 handling="landing" if sampler == "landing" else "projection", seed=params.seed + 1,
                                 device=device, batch_size=cfg.batch_size, prior=prior)
        groups[sampler] = samples_group(res, m.wall_s, m.peak_mem_mb, str(device))
        log.info("sample[%s/%s]: %d samples in %.2fs, drop rate %.4f", name, sampler, len(res.x), m.wall_s,
                 res.drop_rate)
        st.log_metrics({f"{sampler}.wall_s": m.wall_s, f"{sampler}.drop_rate": res.drop_rate,
                        f"{sampler}.peak_mem_mb": m.peak_mem_mb})
    io.write_samples(st.out, groups, {"fingerprint": st.fingerprint, "dataset": name, "constraint": meta["constraint"],
                                      "device": str(device)})
    st.log_params({"dataset": name, "device": str(device), "prior": params.prior_for(name),
                   **tracking.flatten({"sample": plain(cfg)})})
    return st.out


@stage("evaluate", Layout.report)
def run_evaluate(params: Params, st: Stage) -> list[dict]:
    """Score every sampler against the test split, with the train-vs-test floor and the prior as reference."""
    splits, attrs = io.read_dataset(st.layout.data(st.name))
    groups, _ = io.read_samples(st.layout.samples(st.name))
    constraint = from_record(attrs)
    metric, score = metric_of(params, st.name, attrs["constraint"])
    rows = evaluate.evaluation_rows(st.name, groups, splits, constraint, metric, score, params.seed,
                                    params.evaluate.feasibility_tol)
    samples_map(st.layout.map_png(st.name), attrs["constraint"], constraint.dim, splits["test"],
                evaluate.kept_samples(groups), {r["sampler"]: r["score"] for r in rows}, st.name)
    return st.evaluation({"dataset": st.name, "rows": rows})
