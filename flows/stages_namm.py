"""The stages of ``method: namm``: data -> mirror (fit g, f) -> train (score model on g(x)) -> sample -> evaluate.

Same contract as the landing stages in flows/stages.py (which dispatch here): fingerprinted outputs written
atomically, one MLflow run per stage, the Prefect flow and ``dvc.yaml`` calling the same functions. Sizes and
steps default to the data set's ``scale`` of ``cdcore bench namm`` (cdcore/namm/bench.py), where they were
measured against a vanilla model; the pipeline trains the NAMM path only (the comparison is the bench's job).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config import NammDataset, Params
from cdcore.data import io
from cdcore.metrics import mmd_rbf
from cdcore.methods.namm.evaluate import distances
from cdcore.methods.namm.fit import finetune_f
from cdcore.methods.namm.train import fit_mdm, mirror_data
from cdcore.methods.namm.sample import sample_mdm
from cdcore.config.namm import NammCfg
from cdcore.methods.namm.fit import build_nets, fit_namm
from cdcore.methods.namm.evaluate import evaluate_namm
from cdcore.nets.images import ScoreUNet
from cdcore.constraints.images import BrightnessConstraint, BurgersConstraint, ImageConstraint, KolmogorovConstraint, PeriodicConstraint
from cdcore.data.namm import make_problem
from cdcore.profiling import measure, resolve_device
from cdcore.report import loss_curve
from flows import tracking
from cdcore.config.namm import finetune_cfg, mdm_cfg, namm_cfg, scale_of, sizes

log = logging.getLogger("cdcore")
FORMAT = "cdcore-namm-v1"

_CONSTRAINTS: dict[str, tuple[type, tuple[str, ...]]] = {
    "burgers": (BurgersConstraint, ("nx", "nt", "mu", "nu", "length", "dt", "substeps")),
    "kolmogorov": (KolmogorovConstraint, ("grid", "n_states", "rows", "cols")),
    "periodic_texture": (PeriodicConstraint, ("tile",)),
    "total_brightness": (BrightnessConstraint, ("image", "total")),
}


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def constraint_kwargs(problem: str, c: ImageConstraint, gen_params: dict) -> dict:
    """The constructor arguments that rebuild a problem's constraint (stored with the data and the model)."""
    _, keys = _CONSTRAINTS[problem]
    out = {}
    for k in keys:
        if k == "length":
            out[k] = float(gen_params.get("length", c.dx * (c.nx - 1)))
        elif k == "image":
            out[k] = int(c.shape[0])
        else:
            out[k] = getattr(c, k)
    return _jsonable(out)


def make_constraint(problem: str, kwargs: dict) -> ImageConstraint:
    if problem not in _CONSTRAINTS:
        raise ValueError(f"unknown NAMM problem {problem!r}; the pipeline offers {', '.join(_CONSTRAINTS)}")
    return _CONSTRAINTS[problem][0](**kwargs)


def _nhwc(flat: np.ndarray, shape: list[int]) -> np.ndarray:
    return np.ascontiguousarray(flat.reshape(len(flat), *shape).astype(np.float32))


# ----- fingerprints ----------------------------------------------------------------
def fp_data(params: Params, name: str, root: Path) -> str:
    from flows.stages import _dump, _hash

    return _hash(["namm-data", _dump(params.dataset(name)), params.seed, io.SCHEMA_VERSION])


def fp_mirror(params: Params, name: str, root: Path) -> str:
    from flows.stages import Layout, _hash

    return _hash(["namm-mirror", io.sha256_file(Layout(root).data(name)), namm_cfg(params.dataset(name)).model_dump(),
                  params.seed])


def fp_train(params: Params, name: str, root: Path) -> str:
    from flows.stages import Layout, _hash

    ds = params.dataset(name)
    ft = finetune_cfg(ds, namm_cfg(ds)).model_dump() if ds.finetune_steps else None
    return _hash(["namm-train", io.sha256_file(Layout(root).mirror(name)), mdm_cfg(ds).model_dump(),
                  ds.finetune_steps, ft, params.seed])


def fp_sample(params: Params, name: str, root: Path) -> str:
    from flows.stages import Layout, _hash

    return _hash(["namm-sample", io.sha256_file(Layout(root).model(name)), sizes(params.dataset(name)), params.seed])


# ----- stages -------------------------------------------------------------------------
def run_data(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Generate the problem's images (the generator checks every one against its constraint), split, write HDF5."""
    from flows.stages import Layout, _dump, _up_to_date

    out = Layout(root).data(name)
    fp = fp_data(params, name, root)
    if _up_to_date(out, fp, "data", name):
        return out
    ds: NammDataset = params.dataset(name)
    sc, sz = scale_of(ds), sizes(ds)
    n = sz["n_train"] + sz["n_val"] + sz["n_test"]
    data = make_problem(ds.problem, n=n, seed=params.seed, **sc.problem_kw.get(ds.problem, {}))
    flat = data.x.reshape(n, -1)
    a, b = sz["n_train"], sz["n_train"] + sz["n_val"]
    splits = {"train": flat[:a], "val": flat[a:b], "test": flat[b:]}
    c = data.constraint
    attrs = {"constraint": ds.problem, "constraint_kwargs": constraint_kwargs(ds.problem, c, data.params),
             "constraint_spec": _jsonable(c.spec()), "dim": int(flat.shape[1]), "shape": list(data.shape),
             "method": "namm", "seed": params.seed, "generator": _jsonable(data.params), "fingerprint": fp,
             "generator_tol": float(data.tol), "max_distance": float(data.extra.get("max_distance", float("nan"))),
             "source": f"synthetic:namm:{ds.problem}", "source_sha256": ""}
    io.write_dataset(out, splits, attrs)
    with tracking.stage_run("data", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, "method": "namm", **{f"data.{k}": v for k, v in _dump(ds).items()}})
            tracking.log_metrics({**{f"n_{k}": len(v) for k, v in splits.items()}, "data_max_distance": attrs["max_distance"]})
    log.info("data[%s]: %d %s images %s -> %s", name, n, ds.problem, data.shape, out)
    return out


def _load_data(root: Path, name: str) -> tuple[dict[str, np.ndarray], dict, ImageConstraint]:
    from flows.stages import Layout

    splits, attrs = io.read_dataset(Layout(root).data(name))
    if attrs.get("method") != "namm":
        raise io.DataError(f"{Layout(root).data(name)}: not a NAMM data file (method {attrs.get('method')!r}); "
                           "re-run `cdcore data`")
    return splits, attrs, make_constraint(attrs["constraint"], attrs["constraint_kwargs"])


def run_mirror(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Fit the mirror maps: g = (1−α)∇ψ + αx (input-convex ψ) and its approximate inverse f (namm.md §1)."""
    from flows.stages import Layout, _up_to_date

    lay = Layout(root)
    out = lay.mirror(name)
    fp = fp_mirror(params, name, root)
    if _up_to_date(out, fp, "mirror", name):
        return out
    ds: NammDataset = params.dataset(name)
    splits, attrs, constraint = _load_data(root, name)
    shape = attrs["shape"]
    cfg = namm_cfg(ds)
    device = resolve_device(params.train.device)
    with tracking.stage_run("mirror", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, "device": str(device), **tracking.flatten({"namm": cfg.model_dump()})})

        def progress(step: int, row: dict) -> None:
            if run:
                tracking.log_metrics({f"namm_{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

        with measure(device) as m:
            g, f, hist = fit_namm(_nhwc(splits["train"], shape), constraint, cfg, seed=params.seed, device=device,
                                  on_progress=progress)
        g, f = g.cpu(), f.cpu()
        diag = evaluate_namm(g, f, _nhwc(splits["val"], shape), constraint, cfg.sigma_max, seed=params.seed)
        meta = {"fingerprint": fp, "dataset": name, "problem": attrs["constraint"], "shape": shape, "dim": attrs["dim"],
                "constraint_kwargs": attrs["constraint_kwargs"], "fit_wall_s": m.wall_s, "diag": _jsonable(diag)}
        save_checkpoint(out, {"format": FORMAT, "namm_cfg": cfg.model_dump_json(), "g": g.state_dict(),
                              "f": f.state_dict(), "meta": meta})
        io.write_text_atomic(out.parent / "history.json", json.dumps(_jsonable(hist), indent=1))
        loss_curve(out.parent / "loss.png", [{"step": s, "loss": v} for s, v in zip(hist["step"], hist["loss"])],
                   f"{name}: NAMM fit", ylabel="cycle + constraint + regulariser")
        if run:
            tracking.log_metrics({"cycle_error": diag["fwd_cyc"], "fit_wall_s": m.wall_s,
                                  **{f"diag.{k}": v for k, v in diag.items() if isinstance(v, (int, float))}})
            tracking.log_artifact(out.parent / "loss.png", "plots")
    log.info("mirror[%s]: NAMM fitted in %.1fs, cycle error %.3g -> %s", name, m.wall_s, diag["fwd_cyc"], out)
    return out


def load_mirror(path: Path) -> tuple[torch.nn.Module, torch.nn.Module, NammCfg, dict]:
    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a NAMM checkpoint (format {state.get('format')!r}); re-run `cdcore mirror`")
    cfg = NammCfg.model_validate_json(state["namm_cfg"])
    g, f = build_nets(int(state["meta"]["shape"][2]), cfg)
    g.load_state_dict(state["g"])
    f.load_state_dict(state["f"])
    return g.eval(), f.eval(), cfg, state["meta"]


def run_train(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None,
              on_progress: Optional[Callable[[int, dict], None]] = None) -> Path:
    """Train the score model on g(x); optionally fine-tune f on its mirror samples; save one bundle."""
    from flows.stages import Layout, _up_to_date

    lay = Layout(root)
    out = lay.model(name)
    fp = fp_train(params, name, root)
    if _up_to_date(out, fp, "train", name):
        return out
    ds: NammDataset = params.dataset(name)
    splits, attrs, constraint = _load_data(root, name)
    shape = attrs["shape"]
    g, f, ncfg, mmeta = load_mirror(lay.mirror(name))
    mcfg = mdm_cfg(ds)
    device = resolve_device(params.train.device)
    x_tr = _nhwc(splits["train"], shape)
    with tracking.stage_run("train", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, "method": "namm", "device": str(device),
                                 **tracking.flatten({"mdm": mcfg.model_dump(), "finetune_steps": ds.finetune_steps})})

        def progress(step: int, row: dict) -> None:
            if run:
                tracking.log_metrics(row, step=step)
            if on_progress:
                on_progress(step, {**row, "elapsed_s": 0.0})

        with measure(device) as m:
            y = mirror_data(g, x_tr)
            net, hist = fit_mdm(y, mcfg, seed=params.seed, device=device, on_progress=progress)
            net = net.cpu()
            ft_info: dict[str, Any] = {}
            if ds.finetune_steps:
                # the bench's fine-tuning (cdcore.benchmarks.namm.finetune_f): its settings, its held-out diagnostics
                sc = replace(scale_of(ds), sample_steps=sizes(ds)["sample_steps"])
                g, f, ft_info = finetune_f(g, f, net, x_tr, constraint, finetune_cfg(ds, ncfg), sc, params.seed, device)
                g, f = g.cpu(), f.cpu()
                log.info("train[%s]: f fine-tuned %d steps; validation mirror samples l(f(y)) %.3g -> %.3g, "
                         "MMD vs train %.4f -> %.4f", name, ds.finetune_steps, ft_info["val_constr_before"],
                         ft_info["val_constr_after"], ft_info["val_mmd_before"], ft_info["val_mmd_after"])
        meta = {"fingerprint": fp, "dataset": name, "method": "namm", "problem": attrs["constraint"], "shape": shape,
                "dim": attrs["dim"], "constraint_kwargs": attrs["constraint_kwargs"], "nf": mcfg.nf,
                "padding": mcfg.padding,
                "sde": {"beta_min": mcfg.beta_min, "beta_max": mcfg.beta_max, "eps_t": mcfg.eps_t},
                "sample_steps": sizes(ds)["sample_steps"], "finetune_steps": ds.finetune_steps,
                "finetune": {k: v for k, v in ft_info.items() if isinstance(v, (int, float, str))},
                "train_wall_s": m.wall_s, "mirror_fit_wall_s": mmeta["fit_wall_s"]}
        save_checkpoint(out, {"format": FORMAT + "-sampler", "namm_cfg": ncfg.model_dump_json(), "g": g.state_dict(),
                              "f": f.state_dict(), "score": net.state_dict(), "meta": meta})
        hrows = [{"step": s, "loss": v} for s, v in zip(hist["step"], hist["loss"])]
        io.write_text_atomic(lay.model_dir(name) / "history.json", json.dumps(hrows))
        loss_curve(lay.model_dir(name) / "loss.png", hrows, f"{name}: mirror-space score model", ylabel="denoising loss")
        if run:
            tracking.log_metrics({"train_wall_s": m.wall_s, **{f"finetune.{k}": float(v) for k, v in ft_info.items()
                                                                if isinstance(v, (int, float))}})
            tracking.log_artifact(lay.model_dir(name) / "loss.png", "plots")
    log.info("train[%s]: mirror diffusion %d steps in %.1fs -> %s", name, mcfg.steps, m.wall_s, out)
    return out


def load_sampler(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The registered bundle: {"g", "f", "score", "constraint", "meta"} (weights-only checkpoint)."""
    from cdcore.dynamics.schedules import VPSDE

    state = load_checkpoint(path, map_location="cpu")
    if state.get("format") != FORMAT + "-sampler":
        raise ValueError(f"{path}: not a NAMM sampler (format {state.get('format')!r}); re-run `cdcore train`")
    meta = state["meta"]
    ncfg = NammCfg.model_validate_json(state["namm_cfg"])
    C = int(meta["shape"][2])
    g, f = build_nets(C, ncfg)
    g.load_state_dict(state["g"])
    f.load_state_dict(state["f"])
    net = ScoreUNet(C, nf=int(meta["nf"]), padding=meta.get("padding", "zeros"))
    net.load_state_dict(state["score"])
    return {"g": g.to(device).eval(), "f": f.to(device).eval(), "score": net.to(device).eval(),
            "sde": VPSDE(**meta["sde"]), "constraint": make_constraint(meta["problem"], meta["constraint_kwargs"]),
            "meta": meta}


def draw(bundle: dict[str, Any], n: int, seed: int, steps: Optional[int] = None) -> torch.Tensor:
    """n samples in the constrained space, NCHW: reverse SDE in mirror space, then x = f(ỹ)."""
    H, W, C = bundle["meta"]["shape"]
    _, x = sample_mdm(bundle["score"], (C, H, W), n, steps=steps or int(bundle["meta"]["sample_steps"]), seed=seed,
                      f=bundle["f"], sde=bundle["sde"])
    return x


def run_sample(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    from flows.stages import Layout, _up_to_date

    lay = Layout(root)
    out = lay.samples(name)
    fp = fp_sample(params, name, root)
    if _up_to_date(out, fp, "sample", name):
        return out
    ds: NammDataset = params.dataset(name)
    sz = sizes(ds)
    device = resolve_device(params.sample.device)
    bundle = load_sampler(lay.model(name), device)
    with tracking.stage_run("sample", name, parent_run_id) as run:
        with measure(device) as m:
            x = draw(bundle, sz["n_samples"], params.seed + 1, sz["sample_steps"])
        flat = x.permute(0, 2, 3, 1).reshape(len(x), -1).float().cpu().numpy()     # NHWC-flat, as the data
        ok = np.isfinite(flat).all(axis=1)
        io.write_samples(out, {"namm": {"x": np.where(ok[:, None], flat, 0.0), "dropped": ~ok, "nfe": sz["sample_steps"],
                                        "newton_iters_mean": 0.0, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb,
                                        "device": str(device)}},
                         {"fingerprint": fp, "dataset": name, "constraint": bundle["meta"]["problem"],
                          "device": str(device), "method": "namm"})
        if run:
            tracking.log_metrics({"namm.wall_s": m.wall_s, "namm.nonfinite": int((~ok).sum())})
    log.info("sample[%s/namm]: %d samples in %.2fs", name, len(flat), m.wall_s)
    return out


def run_evaluate(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> list[dict]:
    """Constraint distance of the samples (mean, median, histogram against held-out data) and MMD to the test split."""
    from flows.stages import Layout

    lay = Layout(root)
    splits, attrs, constraint = _load_data(root, name)
    groups, _ = io.read_samples(lay.samples(name))
    shape = attrs["shape"]
    H, W, C = shape
    test = splits["test"].astype(np.float64)

    def dist(flat: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(_nhwc(flat, shape)).permute(0, 3, 1, 2)
        return distances(constraint, x)

    d_test = dist(splits["test"])
    n_floor = min(len(splits["train"]), len(test))
    floor = mmd_rbf(splits["train"][:n_floor].astype(np.float64), test, seed=params.seed)
    rows, shown = [], {}
    for sampler, grp in groups.items():
        ok = ~grp["dropped"].astype(bool)
        x = grp["x"][ok]
        d = dist(x)
        shown[sampler] = d
        row = {"dataset": name, "sampler": sampler, "method": "namm", "n_samples": int(len(grp["x"])),
               "metric": "mmd", "score": mmd_rbf(x.astype(np.float64), test, seed=params.seed) if len(x) > 1 else float("nan"),
               "score_floor": floor, "score_reference": float("nan"), "score_target": float("nan"),
               "jsd": float("nan"), "jsd_floor": float("nan"), "jsd_uniform": float("nan"),
               "constraint_mean": float(d.mean()), "constraint_median": float(np.median(d)),
               "data_constraint_mean": float(d_test.mean()),
               "violation_max": float(d.max()) if len(d) else float("nan"),
               "violation_mean": float(d.mean()) if len(d) else float("nan"),
               "infeasible_rate": float((d > attrs["generator_tol"]).mean()) if len(d) else float("nan"),
               "drop_rate": float((~ok).mean()), "nonfinite": int((~ok).sum()),
               "nfe": int(grp["nfe"]), "newton_iters": 0.0, "wall_s": float(grp["wall_s"]),
               "peak_mem_mb": float(grp["peak_mem_mb"]), "device": grp["device"]}
        rows.append(row)
    _plot(lay.map_png(name), splits["test"], groups, shape, d_test, shown, name)
    io.write_text_atomic(lay.report(name), json.dumps({"dataset": name, "method": "namm", "rows": rows}, indent=1))
    with tracking.stage_run("evaluate", name, parent_run_id) as run:
        if run:
            for r in rows:
                tracking.log_metrics({f"{r['sampler']}.{k}": v for k, v in r.items() if isinstance(v, (int, float))})
            tracking.log_artifact(lay.map_png(name), "plots")
            tracking.log_artifact(lay.report(name), "reports")
    return rows


def _plot(path: Path, test: np.ndarray, groups: dict, shape: list[int], d_test: np.ndarray,
          d_samples: dict[str, np.ndarray], name: str) -> None:
    """Held-out images above samples, and the constraint-distance histograms (data vs samples, log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, W, C = shape
    k = 6
    sampler = next(iter(groups))
    rows = [("held-out", test[:k]), (sampler, groups[sampler]["x"][:k])]
    lim = float(np.abs(test[:k]).max()) or 1.0       # one colour scale for data and samples
    fig = plt.figure(figsize=(2 * k, 6.5))
    for r, (label, imgs) in enumerate(rows):
        for i, im in enumerate(imgs):
            ax = fig.add_subplot(3, k, r * k + i + 1)
            a = im.reshape(H, W, C)
            ax.imshow(a[..., 0] if C <= 2 else a, cmap="RdBu_r" if C <= 2 else None, vmin=-lim, vmax=lim)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label)
    ax = fig.add_subplot(3, 1, 3)
    allv = np.concatenate([d_test, *d_samples.values()])
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = (allv.min(), allv.max()) if len(allv) else (1e-8, 1.0)
    bins = np.logspace(np.log10(lo), np.log10(max(hi, lo * 10)), 40)
    ax.hist(np.clip(d_test, lo, None), bins=bins, alpha=0.6, label=f"held-out data (mean {d_test.mean():.2g})")
    for s, d in d_samples.items():
        ax.hist(np.clip(d, lo, None), bins=bins, alpha=0.6, label=f"{s} samples (mean {d.mean():.2g})")
    ax.set_xscale("log")
    ax.set_xlabel("constraint distance ℓ_constr")
    ax.legend()
    fig.suptitle(f"{name}: held-out data vs NAMM samples")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_identity(params: Params, name: str, root: Path) -> Path:
    """The mirror stage of a data set whose method needs no mirror map: a record saying so (for ``dvc.yaml``)."""
    from flows.stages import Layout

    out = Layout(root).mirror_dir(name) / "none.json"
    io.write_text_atomic(out, json.dumps({"dataset": name, "method": params.method_for(name), "mirror": None,
                                          "why": "only method namm fits a mirror map"}, indent=1) + "\n")
    return out
