"""Fairness experiment on 8×8 digits at CPU scale (dual.md §2.2): minorities 4, 5, 7 kept at fraction ρ.

Variants share one training loop (cdcore.methods.dual.train_dual):
  unconstrained  λ ≡ 0 on the biased data
  dual           resilient dual training (b̃ = 0, γ = --gamma)
  dual-rel       dual training with b̃_i = κ · running objective loss (--kappa)
  reweight       fixed oracle λ (per-class reweighting to a uniform mixture; needs π)
  conditional    class-conditional model on the biased data, sampled with uniform labels (needs labels)

Each variant's metrics are merged into --out (JSON), so variants can be run in
separate invocations; --table prints the table from that file.

    python scripts/dual_digits.py --variants unconstrained dual --out reports/dual/digits.json
    python scripts/dual_digits.py --table --out reports/dual/digits.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cdcore.data.digits import DigitsCfg, load_digits_split
from cdcore.dual_eval import evaluate_digits, fit_classifier
from cdcore.methods.dual import (
    DDPMCfg,
    DenoiserCfg,
    DualAscentCfg,
    DualCfg,
    DualData,
    DualTrainCfg,
    oracle_lambdas,
    predicted_shares,
    sample_ddpm,
    train_dual,
    uniform_labels,
)

VARIANTS = ("unconstrained", "dual", "dual-rel", "reweight", "conditional")


def variant_cfg(name: str, args: argparse.Namespace, class_shares: np.ndarray, minority: list[int]) -> DualCfg:
    base = DualCfg(
        schedule=DDPMCfg(T=args.T),
        model=DenoiserCfg(hidden=args.hidden, depth=args.depth, num_classes=10 if name == "conditional" else 0),
        train=DualTrainCfg(steps=args.steps, primal_batch=128, lr=args.lr, warmup=100, ema=0.999,
                           log_every=max(1, args.steps // 10)),
    )
    dual = {
        "unconstrained": DualAscentCfg(mode="unconstrained"),
        "conditional": DualAscentCfg(mode="unconstrained"),
        "dual": DualAscentCfg(mode="dual", resilience=args.gamma, lr=args.dual_lr, primal_per_dual=3),
        "dual-rel": DualAscentCfg(mode="dual", threshold=args.kappa, threshold_kind="relative",
                                  lr=args.dual_lr, primal_per_dual=3),
        "reweight": DualAscentCfg(mode="fixed", fixed_lambdas=oracle_lambdas(class_shares, minority)),
    }[name]
    return base.model_copy(update={"dual": dual})


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    split = load_digits_split(DigitsCfg(rho=args.rho, seed=args.seed))
    minority = list(split.minority)
    t0 = time.perf_counter()
    clf = fit_classifier(split.x_train, split.y_train, split.x_test, split.y_test, seed=args.seed + 100)
    print(f"classifier: held-out accuracy {clf.accuracy:.3f} ({time.perf_counter() - t0:.0f}s); "
          f"biased set {len(split.y_biased)} images, minority counts "
          f"{[int((split.y_biased == c).sum()) for c in minority]}")
    print(HEADER)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in args.variants:
        cfg = variant_cfg(name, args, split.class_shares, minority)
        data = DualData.from_labelled(split.x_biased, split.y_biased, minority, num_classes=10)
        t0 = time.perf_counter()
        outc = train_dual(data, cfg, seed=args.seed)
        t_train = time.perf_counter() - t0
        labels = uniform_labels(args.n_samples, 10, seed=args.seed) if name == "conditional" else None
        t0 = time.perf_counter()
        x = sample_ddpm(outc.model, args.n_samples, seed=args.seed + 1, labels=labels, cfg=cfg.sampler)
        t_sample = time.perf_counter() - t0
        ev = evaluate_digits(x, clf, (split.x_test, split.y_test), split.x_biased, minority=minority, seed=args.seed)
        tail = max(1, len(outc.lambdas) // 5)
        lam = outc.lambdas[-tail:].mean(0)                   # the model averages over recent λ (EMA weights)
        pred = predicted_shares(split.class_shares, minority, lam)
        ev.update({"variant": name, "seed": args.seed, "rho": args.rho, "steps": args.steps,
                   "lambda_tail_mean": lam.tolist(), "minority_share_predicted": float(pred[minority].sum()),
                   "train_s": t_train, "sample_s": t_sample,
                   "n_params": sum(p.numel() for p in outc.model.parameters())})
        results[f"{name}/seed{args.seed}"] = ev
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
        print(row(ev), flush=True)


HEADER = (f"{'variant':<14}{'λ (4,5,7)':<20}{'pred':>6}{'raw [95% CI]':>22}{'corr [95% CI]':>22}"
          f"{'KL_U corr':>10}{'lowconf':>8}{'FD':>8}{'floor':>7}{'copy':>6}{'copy_min':>9}{'train_s':>8}")


def row(ev: dict) -> str:
    lam = ",".join(f"{v:.2f}" for v in ev["lambda_tail_mean"])
    ci = lambda k: f"{ev[k]:.3f} [{ev[k + '_ci'][0]:.3f},{ev[k + '_ci'][1]:.3f}]"   # noqa: E731
    name = f"{ev['variant']}/s{ev['seed']}"
    return (f"{name:<14}{lam:<20}{ev['minority_share_predicted']:>6.3f}{ci('minority_share_raw'):>22}"
            f"{ci('minority_share_corrected'):>22}{ev['kl_uniform_corrected']:>10.3f}{ev['frac_low_conf']:>8.3f}"
            f"{ev['fd']:>8.1f}{ev['fd_floor']:>7.1f}{ev['near_copy_frac']:>6.2f}{ev['near_copy_frac_minority']:>9.2f}"
            f"{ev['train_s']:>8.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--T", type=int, default=200)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=1.0, help="resilience γ of the 'dual' variant")
    p.add_argument("--kappa", type=float, default=1.0, help="relative threshold of the 'dual-rel' variant")
    p.add_argument("--dual-lr", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="reports/dual/digits.json")
    p.add_argument("--table", action="store_true", help="print the table from --out and exit")
    args = p.parse_args()
    if args.table:
        results = json.loads(Path(args.out).read_text())
        print(HEADER)
        for ev in results.values():
            print(row(ev))
        return
    run(args)


if __name__ == "__main__":
    main()
