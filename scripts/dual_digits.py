"""Fairness experiment on 8×8 digits at CPU scale (dual.md §2.2): minorities 4, 5, 7 kept at fraction ρ.

A thin caller of :mod:`cdcore.benchmarks.dual` (the logic `cdcore bench dual` runs) for one seed and any
settings. Variants share one training loop (cdcore.methods.dual.train_dual):
  unconstrained  λ ≡ 0 on the biased data
  dual           resilient dual training (b̃ = 0, γ = --gamma)
  dual-rel       dual training with b̃_i = κ · running objective loss (--kappa)
  reweight       fixed oracle λ (per-class reweighting to a uniform mixture; needs π)
  conditional    class-conditional model on the biased data, sampled with uniform labels (needs labels)

Each variant's metrics are merged into --out (JSON), so variants can be run in
separate invocations; --table prints the table from that file. For every variant × several seeds
with intervals, use `cdcore bench dual --scale ci|paper`.

    python scripts/dual_digits.py --variants unconstrained dual --out reports/dual/digits.json
    python scripts/dual_digits.py --table --out reports/dual/digits.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cdcore.data.digits import DigitsCfg, load_digits_split
from cdcore.benchmarks.dual import fit_split_classifier, run_variant
from cdcore.config.dual import VARIANTS
from cdcore.config.dual import DualScale


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    scale = DualScale(steps=args.steps, hidden=args.hidden, depth=args.depth, T=args.T, lr=args.lr,
                      n_samples=args.n_samples, resilience=args.gamma, kappa=args.kappa, dual_lr=args.dual_lr,
                      rho=args.rho, seeds=(args.seed,), variants=tuple(args.variants))
    split = load_digits_split(DigitsCfg(rho=args.rho, seed=args.seed))
    minority = list(split.minority)
    t0 = time.perf_counter()
    clf = fit_split_classifier(split, scale, args.seed)
    print(f"classifier: held-out accuracy {clf.accuracy:.3f} ({time.perf_counter() - t0:.0f}s); "
          f"biased set {len(split.y_biased)} images, minority counts "
          f"{[int((split.y_biased == c).sum()) for c in minority]}")
    print(HEADER)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in args.variants:
        ev = run_variant(name, split, clf, scale, args.seed, args.device)
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
    p.add_argument("--device", default="cpu")
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
