"""The stages of ``method: namm``: data -> mirror (fit g, f) -> train (score model on g(x)) -> sample -> evaluate.

Sizes and steps default to the data set's ``scale`` of ``cdcore bench namm``, where they were measured against a
vanilla model; the pipeline trains the NAMM path only (the comparison is the bench's job).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from cdcore.config import NammDataset, Params
from cdcore.config.namm import finetune_cfg, mdm_cfg, namm_cfg, scale_of, sizes
from cdcore.data import io
from cdcore.data.images import make_problem
from cdcore.methods.namm import io as namm_io
from cdcore.methods.namm.evaluate import evaluate_namm, evaluation_rows
from cdcore.methods.namm.fit import finetune_f, fit_namm
from cdcore.methods.namm.train import fit_mdm, mirror_data
from cdcore.profiling import measure, resolve_device
from cdcore.report import loss_curve
from cdcore.report.namm import samples_and_distances
from flows import tracking
from flows.cache import Stage, digest, plain, stage
from flows.layout import Layout

log = logging.getLogger("cdcore")


# ----- fingerprints ------------------------------------------------------------------------------------------------
def fp_data(params: Params, name: str, root: Path) -> str:
    return digest(["namm-data", plain(params.dataset(name)), params.seed, io.SCHEMA_VERSION])


def fp_mirror(params: Params, name: str, root: Path) -> str:
    return digest(["namm-mirror", io.sha256_file(Layout(root).data(name)), namm_cfg(params.dataset(name)).model_dump(),
                   params.seed])


def fp_train(params: Params, name: str, root: Path) -> str:
    ds = params.dataset(name)
    ft = finetune_cfg(ds, namm_cfg(ds)).model_dump() if ds.finetune_steps else None
    return digest(["namm-train", io.sha256_file(Layout(root).mirror(name)), mdm_cfg(ds).model_dump(),
                   ds.finetune_steps, ft, params.seed])


def fp_sample(params: Params, name: str, root: Path) -> str:
    return digest(["namm-sample", io.sha256_file(Layout(root).model(name)), sizes(params.dataset(name)), params.seed])


# ----- stages ----------------------------------------------------------------------------------------------------------
@stage("data", Layout.data, fp_data)
def run_data(params: Params, st: Stage) -> Path:
    """Generate the problem's images (the generator checks every one against its constraint), split, write HDF5."""
    ds: NammDataset = params.dataset(st.name)
    sz = sizes(ds)
    n = sz["n_train"] + sz["n_val"] + sz["n_test"]
    data = make_problem(ds.problem, n=n, seed=params.seed, **scale_of(ds).problem_kw.get(ds.problem, {}))
    splits, attrs = namm_io.problem_dataset(data, ds.problem, sz["n_train"], sz["n_val"], params.seed, st.fingerprint)
    io.write_dataset(st.out, splits, attrs)
    st.log_params({"dataset": st.name, "method": "namm", **{f"data.{k}": v for k, v in plain(ds).items()}})
    st.log_metrics({**{f"n_{k}": len(v) for k, v in splits.items()}, "data_max_distance": attrs["max_distance"]})
    log.info("data[%s]: %d %s images %s -> %s", st.name, n, ds.problem, data.shape, st.out)
    return st.out


@stage("mirror", Layout.mirror, fp_mirror)
def run_mirror(params: Params, st: Stage) -> Path:
    """Fit the mirror maps: g = (1−α)∇ψ + αx (input-convex ψ) and its approximate inverse f (namm.md §1)."""
    splits, attrs, constraint = namm_io.load_data(st.layout.data(st.name))
    shape, cfg = attrs["shape"], namm_cfg(params.dataset(st.name))
    device = resolve_device(params.train.device)
    st.log_params({"dataset": st.name, "device": str(device), **tracking.flatten({"namm": cfg.model_dump()})})
    progress = st.progress(metrics=lambda row: {f"namm_{k}": v for k, v in row.items() if isinstance(v, (int, float))})
    with measure(device) as m:
        g, f, hist = fit_namm(namm_io.nhwc(splits["train"], shape), constraint, cfg, seed=params.seed, device=device,
                              on_progress=progress)
    g, f = g.cpu(), f.cpu()
    diag = evaluate_namm(g, f, namm_io.nhwc(splits["val"], shape), constraint, cfg.sigma_max, seed=params.seed)
    meta = {"fingerprint": st.fingerprint, "dataset": st.name, "problem": attrs["constraint"], "shape": shape,
            "dim": attrs["dim"], "constraint_kwargs": attrs["constraint_kwargs"], "fit_wall_s": m.wall_s,
            "diag": namm_io.jsonable(diag)}
    namm_io.save_mirror(st.out, g, f, cfg, meta)
    st.history(namm_io.jsonable(hist), lambda png: loss_curve(
        png, [{"step": s, "loss": v} for s, v in zip(hist["step"], hist["loss"])], f"{st.name}: NAMM fit",
        ylabel="cycle + constraint + regulariser"))
    st.log_metrics({"cycle_error": diag["fwd_cyc"], "fit_wall_s": m.wall_s,
                    **{f"diag.{k}": v for k, v in diag.items() if isinstance(v, (int, float))}})
    log.info("mirror[%s]: NAMM fitted in %.1fs, cycle error %.3g -> %s", st.name, m.wall_s, diag["fwd_cyc"], st.out)
    return st.out


def _finetune(params: Params, ds: NammDataset, g, f, net, x_tr, constraint, ncfg, device, name: str):
    """The bench's fine-tuning of f on mirror samples (cdcore.methods.namm.fit.finetune_f), its settings."""
    sc = replace(scale_of(ds), sample_steps=sizes(ds)["sample_steps"])
    g, f, info = finetune_f(g, f, net, x_tr, constraint, finetune_cfg(ds, ncfg), sc, params.seed, device)
    log.info("train[%s]: f fine-tuned %d steps; validation mirror samples l(f(y)) %.3g -> %.3g, "
             "MMD vs train %.4f -> %.4f", name, ds.finetune_steps, info["val_constr_before"],
             info["val_constr_after"], info["val_mmd_before"], info["val_mmd_after"])
    return g.cpu(), f.cpu(), info


@stage("train", Layout.model, fp_train)
def run_train(params: Params, st: Stage) -> Path:
    """Train the score model on g(x); optionally fine-tune f on its mirror samples; save one bundle."""
    ds: NammDataset = params.dataset(st.name)
    splits, attrs, constraint = namm_io.load_data(st.layout.data(st.name))
    g, f, ncfg, mmeta = namm_io.load_mirror(st.layout.mirror(st.name))
    mcfg = mdm_cfg(ds)
    device = resolve_device(params.train.device)
    x_tr = namm_io.nhwc(splits["train"], attrs["shape"])
    st.log_params({"dataset": st.name, "method": "namm", "device": str(device),
                   **tracking.flatten({"mdm": mcfg.model_dump(), "finetune_steps": ds.finetune_steps})})
    progress = st.progress(metrics=lambda row: row, echo=lambda row: {**row, "elapsed_s": 0.0})
    with measure(device) as m:
        net, hist = fit_mdm(mirror_data(g, x_tr), mcfg, seed=params.seed, device=device, on_progress=progress)
        net = net.cpu()
        ft: dict[str, Any] = {}
        if ds.finetune_steps:
            g, f, ft = _finetune(params, ds, g, f, net, x_tr, constraint, ncfg, device, st.name)
    meta = {"fingerprint": st.fingerprint, "dataset": st.name, "method": "namm", "problem": attrs["constraint"],
            "shape": attrs["shape"], "dim": attrs["dim"], "constraint_kwargs": attrs["constraint_kwargs"],
            "nf": mcfg.nf, "padding": mcfg.padding,
            "sde": {"beta_min": mcfg.beta_min, "beta_max": mcfg.beta_max, "eps_t": mcfg.eps_t},
            "sample_steps": sizes(ds)["sample_steps"], "finetune_steps": ds.finetune_steps,
            "finetune": {k: v for k, v in ft.items() if isinstance(v, (int, float, str))},
            "train_wall_s": m.wall_s, "mirror_fit_wall_s": mmeta["fit_wall_s"]}
    namm_io.save_sampler(st.out, g, f, net, ncfg, meta)
    rows = [{"step": s, "loss": v} for s, v in zip(hist["step"], hist["loss"])]
    st.history(rows, lambda png: loss_curve(png, rows, f"{st.name}: mirror-space score model",
                                            ylabel="denoising loss"), indent=None)
    st.log_metrics({"train_wall_s": m.wall_s,
                    **{f"finetune.{k}": float(v) for k, v in ft.items() if isinstance(v, (int, float))}})
    log.info("train[%s]: mirror diffusion %d steps in %.1fs -> %s", st.name, mcfg.steps, m.wall_s, st.out)
    return st.out


@stage("sample", Layout.samples, fp_sample)
def run_sample(params: Params, st: Stage) -> Path:
    sz = sizes(params.dataset(st.name))
    device = resolve_device(params.sample.device)
    bundle = namm_io.load_sampler(st.layout.model(st.name), device)
    with measure(device) as m:
        x = namm_io.draw(bundle, sz["n_samples"], params.seed + 1, sz["sample_steps"])
    group = namm_io.samples_group(x, sz["sample_steps"], m.wall_s, m.peak_mem_mb, str(device))
    io.write_samples(st.out, {"namm": group}, {"fingerprint": st.fingerprint, "dataset": st.name,
                                               "constraint": bundle["meta"]["problem"], "device": str(device),
                                               "method": "namm"})
    st.log_metrics({"namm.wall_s": m.wall_s, "namm.nonfinite": int(group["dropped"].sum())})
    log.info("sample[%s/namm]: %d samples in %.2fs", st.name, len(group["x"]), m.wall_s)
    return st.out


@stage("evaluate", Layout.report)
def run_evaluate(params: Params, st: Stage) -> list[dict]:
    """Constraint distance of the samples (mean, median, histogram against held-out data) and MMD to the test split."""
    splits, attrs, constraint = namm_io.load_data(st.layout.data(st.name))
    groups, _ = io.read_samples(st.layout.samples(st.name))
    rows, d_test, shown = evaluation_rows(st.name, groups, splits, attrs, constraint, params.seed)
    samples_and_distances(st.layout.map_png(st.name), splits["test"], groups, attrs["shape"], d_test, shown, st.name)
    return st.evaluation({"dataset": st.name, "method": "namm", "rows": rows})
