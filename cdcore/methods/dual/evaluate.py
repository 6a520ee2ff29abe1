"""Evaluation of generated digits that cannot flatter (dual.md §2.2 "honest class-distribution measurement").

* The classifier (:func:`fit_classifier`) is trained on the balanced real train
  split only; its held-out accuracy and confusion matrix are part of the report,
  so a histogram is never read without its measuring error.
* A sample whose max class probability is below ``threshold`` is counted as
  *unrecognised*, never assigned to a class. The raw histogram is over the
  recognised samples; the corrected histogram solves, by non-negative least
  squares, observed outcome frequencies (10 classes + "unrecognised") =
  C_extᵀ p, with C_ext the test-set rates P(outcome | true class) under the same
  rule (black-box shift estimation; renormalised). Label shift is its
  assumption: unrecognisable garbage is not a class, so ``frac_low_conf`` is
  reported beside it.
* KL(p‖U), TV(p, U), minority share and max/min ratio carry percentile bootstrap
  CIs over the generated samples (the confusion matrix is held fixed).
* Fréchet distance in the classifier's penultimate features, generated vs the
  balanced test split with the same N on both sides, next to its floor: real
  balanced train vs the same test split at the same N. (The floor is optimistic
  about nothing: the classifier has seen those train images, which if anything
  raises it.)
* Near copies: the nearest-neighbour L2 distance of each sample to the
  generator's training set, compared with the same distance for held-out real
  images; a sample closer than ``copy_factor`` × the median real distance is a
  near copy. Minorities have ~12 training images, so the fraction is also given
  for samples classified as a minority.

Public API::

    fit_classifier(x_train, y_train, x_test, y_test, seed=0, ...) -> EvalClassifier
    evaluate_digits(samples, classifier, test, train, minority=(4, 5, 7), ...) -> dict
    frechet_distance(a, b) -> float
    bbse_correct(outcome_freq, confusion_ext) -> np.ndarray
    evaluation_rows(...) / finetune_rows(...)   # the rows of the pipeline's evaluate and finetune stages
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy import linalg
from scipy.optimize import nnls
from torch import Tensor, nn

from cdcore.data.digits import NUM_CLASSES
from cdcore.methods.dual.ascent import predicted_shares

if TYPE_CHECKING:
    from cdcore.methods.dual.train import DualOutcome

SHARE_TOL = 0.03     # issue #5: each minority class within 0.03 of uniform


class DigitNet(nn.Module):
    """Small CNN for square grey images; ``features`` is the penultimate layer used for Fréchet distances."""

    def __init__(self, side: int, num_classes: int = 10, width: int = 32, feat: int = 128) -> None:
        super().__init__()
        self.side = side
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4) if side != 8 else nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 16, feat), nn.SiLU())
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(feat, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.conv(x.reshape(-1, 1, self.side, self.side))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.features(x)))


@dataclass
class EvalClassifier:
    net: DigitNet
    accuracy: float                 # held-out (test split) accuracy, argmax
    confusion: np.ndarray           # (K, K) row-normalised P(argmax = j | true i) on the test split
    confusion_ext: np.ndarray       # (K, K+1) P(outcome | true i), last column = unrecognised (max prob < threshold)
    threshold: float
    x_train: np.ndarray             # balanced real train images (for the Fréchet floor)
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.confusion.shape[0]

    @torch.no_grad()
    def proba(self, x: np.ndarray, batch: int = 4096) -> np.ndarray:
        self.net.eval()
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        return torch.cat([torch.softmax(self.net(xt[i:i + batch]), 1) for i in range(0, len(xt), batch)]).numpy()

    @torch.no_grad()
    def features(self, x: np.ndarray, batch: int = 4096) -> np.ndarray:
        self.net.eval()
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        return torch.cat([self.net.features(xt[i:i + batch]) for i in range(0, len(xt), batch)]).double().numpy()

    def outcomes(self, x: np.ndarray) -> np.ndarray:
        """Class index, or K for "unrecognised" (max prob < threshold)."""
        p = self.proba(x)
        return np.where(p.max(1) >= self.threshold, p.argmax(1), self.num_classes)


def fit_classifier(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   seed: int = 0, epochs: int = 40, batch: int = 64, lr: float = 2e-3,
                   threshold: float = 0.5, num_classes: int = 10) -> EvalClassifier:
    """Train the evaluation CNN on (balanced, real) train data; measure it on the held-out test split."""
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    side = int(round(np.sqrt(x_train.shape[1])))
    if side * side != x_train.shape[1]:
        raise ValueError(f"images must be square, got {x_train.shape[1]} pixels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitNet(side, num_classes)
        xt, yt = torch.as_tensor(x_train), torch.as_tensor(np.asarray(y_train), dtype=torch.long)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * int(np.ceil(len(xt) / batch))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), batch):
                j = perm[i:i + batch]
                loss = nn.functional.cross_entropy(net(xt[j]), yt[j])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    clf = EvalClassifier(net.eval(), 0.0, np.zeros((num_classes, num_classes)),
                         np.zeros((num_classes, num_classes + 1)), threshold, x_train, x_test, np.asarray(y_test))
    p = clf.proba(x_test)
    pred, out = p.argmax(1), clf.outcomes(x_test)
    y_test = np.asarray(y_test)
    for i in range(num_classes):
        m = y_test == i
        if m.any():
            clf.confusion[i] = np.bincount(pred[m], minlength=num_classes) / m.sum()
            clf.confusion_ext[i] = np.bincount(out[m], minlength=num_classes + 1) / m.sum()
    clf.accuracy = float((pred == y_test).mean())
    return clf


# ----- distribution estimates --------------------------------------------------
def bbse_correct(outcome_freq: np.ndarray, confusion_ext: np.ndarray) -> np.ndarray:
    """p̂ ≥ 0, Σp̂ = 1 minimising ‖C_extᵀ p − o‖ (NNLS, then renormalised)."""
    p, _ = nnls(np.asarray(confusion_ext, dtype=np.float64).T, np.asarray(outcome_freq, dtype=np.float64))
    s = p.sum()
    return p / s if s > 0 else np.full(len(p), 1.0 / len(p))


def kl_to_uniform(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] * len(p))))


def tv_to_uniform(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(0.5 * np.abs(p - 1.0 / len(p)).sum())


def _summary(p: np.ndarray, minority: Sequence[int]) -> dict[str, float]:
    mn = p.min()
    return {"kl_uniform": kl_to_uniform(p), "tv_uniform": tv_to_uniform(p),
            "minority_share": float(p[list(minority)].sum()),
            "max_min_ratio": float(p.max() / mn) if mn > 0 else float("inf")}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^{1/2}) of two feature sets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean), 0.0))


def _nn_dists(x: np.ndarray, ref: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) nearest-neighbour L2 distances of each row of x to ref."""
    ref = torch.as_tensor(np.asarray(ref), dtype=torch.float64)
    d1, d2 = [], []
    for i in range(0, len(x), chunk):
        d = torch.cdist(torch.as_tensor(np.asarray(x[i:i + chunk]), dtype=torch.float64), ref)
        v = torch.topk(d, k=min(2, d.shape[1]), largest=False).values
        d1.append(v[:, 0])
        d2.append(v[:, -1])
    return torch.cat(d1).numpy(), torch.cat(d2).numpy()


def evaluate_digits(samples: np.ndarray | Tensor, classifier: EvalClassifier,
                    test: tuple[np.ndarray, np.ndarray], train: np.ndarray,
                    minority: Sequence[int] = (4, 5, 7), n_boot: int = 200, fd_repeats: int = 5,
                    copy_factor: float = 0.5, seed: int = 0) -> dict:
    """Class histogram (raw / softmax / corrected, with CIs), Fréchet distance with floor, near copies.

    ``test`` = the balanced held-out (x, y); ``train`` = the images the generator
    was trained on (the near-copy reference). Scalars are floats, histograms lists;
    ``*_ci`` entries are 95 % percentile-bootstrap [lo, hi].
    """
    x = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN/Inf")
    K = classifier.num_classes
    rng = np.random.default_rng(seed)
    probs = classifier.proba(x)
    out = np.where(probs.max(1) >= classifier.threshold, probs.argmax(1), K)
    n = len(x)

    def hists(o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = np.bincount(o, minlength=K + 1).astype(np.float64)
        rec = cnt[:K].sum()
        raw = cnt[:K] / rec if rec > 0 else np.full(K, np.nan)
        return raw, bbse_correct(cnt / cnt.sum(), classifier.confusion_ext)

    raw, corr = hists(out)
    res: dict = {"n_samples": n, "classifier_accuracy": classifier.accuracy,
                 "frac_low_conf": float((out == K).mean()),
                 "hist_raw": raw.tolist(), "hist_softmax": probs.mean(0).tolist(), "hist_corrected": corr.tolist()}
    for tag, p in (("raw", raw), ("corrected", corr)):
        for k, v in _summary(p, minority).items():
            res[f"{k}_{tag}"] = v
    boots: dict[str, list[float]] = {}
    for _ in range(n_boot):
        o = out[rng.integers(0, n, n)]
        r, c = hists(o)
        boots.setdefault("frac_low_conf", []).append(float((o == K).mean()))
        for tag, p in (("raw", r), ("corrected", c)):
            for k, v in _summary(p, minority).items():
                boots.setdefault(f"{k}_{tag}", []).append(v)
    for k, vals in boots.items():
        v = np.asarray(vals, dtype=np.float64)
        v = v[np.isfinite(v)]
        res[f"{k}_ci"] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [float("nan")] * 2
    # Fréchet distance, same N both sides, repeated over random subsets
    xt, _ = test
    f_gen, f_test, f_tr = classifier.features(x), classifier.features(xt), classifier.features(classifier.x_train)
    m = min(n, len(f_test), len(f_tr))
    fd, floor = [], []
    for _ in range(fd_repeats):
        ft = f_test[rng.choice(len(f_test), m, replace=False)]
        fd.append(frechet_distance(f_gen[rng.choice(n, m, replace=False)], ft))
        floor.append(frechet_distance(f_tr[rng.choice(len(f_tr), m, replace=False)], ft))
    res.update({"fd": float(np.mean(fd)), "fd_std": float(np.std(fd)), "fd_floor": float(np.mean(floor)),
                "fd_floor_std": float(np.std(floor)), "fd_n": m})
    # near copies of the generator's training images
    g1, g2 = _nn_dists(x, train)
    r1, r2 = _nn_dists(xt, train)
    ref = float(np.median(r1))
    copy = g1 < copy_factor * ref
    mino = np.isin(out, list(minority))
    res.update({"nn_dist_median": float(np.median(g1)), "nn_dist_real_median": ref,
                "nn_ratio_median": float(np.median(g1 / np.maximum(g2, 1e-12))),
                "nn_ratio_real_median": float(np.median(r1 / np.maximum(r2, 1e-12))),
                "near_copy_frac": float(copy.mean()),
                "near_copy_frac_minority": float(copy[mino].mean()) if mino.any() else float("nan"),
                "near_copy_real_frac": float((r1 < copy_factor * ref).mean())})
    return res


# ----- the pipeline's rows ------------------------------------------------------------------------------------
def report_classes(minority: Sequence[int], exclude: Sequence[int]) -> list[int]:
    """The classes whose shares the report shows: the constrained ones, else the excluded ones."""
    return list(minority or exclude or [4, 5, 7])


def training_history(outcome: "DualOutcome", class_shares: np.ndarray, minority: Sequence[int]) -> dict[str, Any]:
    """λ, the losses and, per dual step, the class shares the λ-mixture predicts (Theorem 1)."""
    def pred(lam: np.ndarray) -> list[float]:
        if not len(minority):
            return class_shares.tolist()
        return predicted_shares(class_shares, list(minority), np.asarray(lam)).tolist()

    return {"lambdas": outcome.lambdas.tolist(), "constraint_losses": outcome.constraint_losses.tolist(),
            "objective": outcome.objective.tolist(), "constraint_names": outcome.constraint_names,
            "predicted_shares": [pred(lam) for lam in outcome.lambdas]}


def evaluation_rows(dataset: str, groups: Mapping[str, Mapping[str, Any]], clf: EvalClassifier,
                    splits: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], minority: Sequence[int],
                    shown: Sequence[int], seed: int) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """A row per sampler (Fréchet distance with its floor, corrected class shares, whether every minority is
    within :data:`SHARE_TOL` of uniform), and each sampler's full :func:`evaluate_digits` dict."""
    rows, evs = [], {}
    for sampler, grp in groups.items():
        ev = evaluate_digits(grp["x"], clf, (splits["test"], labels["test"]), splits["train"], minority=shown,
                             seed=seed)
        corr = np.asarray(ev["hist_corrected"])
        evs[sampler] = ev
        rows.append({
            "dataset": dataset, "sampler": sampler, "method": "dual", "n_samples": int(len(grp["x"])),
            "metric": "frechet_clf", "score": ev["fd"], "score_floor": ev["fd_floor"],
            "score_reference": float("nan"), "score_target": float("nan"),
            "jsd": float("nan"), "jsd_floor": float("nan"), "jsd_uniform": float("nan"),
            "violation_max": float("nan"), "violation_mean": float("nan"), "infeasible_rate": float("nan"),
            "drop_rate": 0.0, "nonfinite": 0, "nfe": int(grp["nfe"]), "newton_iters": 0.0,
            "wall_s": float(grp["wall_s"]), "peak_mem_mb": float(grp["peak_mem_mb"]), "device": grp["device"],
            "classifier_accuracy": ev["classifier_accuracy"], "kl_uniform": ev["kl_uniform_corrected"],
            "tv_uniform": ev["tv_uniform_corrected"], "low_conf_rate": ev["frac_low_conf"],
            "near_copy_frac": ev["near_copy_frac"], "hist_corrected": ev["hist_corrected"],
            "hist_raw": ev["hist_raw"],
            **{f"share/{c}": float(corr[c]) for c in shown},
            "share_within_tol": bool(np.all(np.abs(corr[list(minority)] - 1 / NUM_CLASSES) <= SHARE_TOL))
            if minority else None})
    return rows, evs


def finetune_rows(name: str, evals: Mapping[str, Mapping[str, Any]],
                  outcomes: Mapping[str, "DualOutcome"]) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    """A row per variant (teacher, unconstrained, constrained) with its final λ and threshold, and the checks
    the experiment makes: the constraint keeps more old digits and a lower Fréchet distance."""
    rows = []
    for v, ev in evals.items():
        o: Optional["DualOutcome"] = outcomes.get(v)
        lam = float(o.final_lambdas[0]) if o is not None and o.lambdas.size else 0.0
        rows.append({"finetune": name, "variant": v, **{k: x for k, x in ev.items() if k != "detail"},
                     "lambda_final": lam,
                     "threshold": float(o.thresholds[0, 0]) if o is not None and v == "constrained" else None,
                     "train_wall_s": float(o.wall_s) if o is not None else 0.0})
    by = {r["variant"]: r for r in rows}
    checks = {
        "constrained_keeps_more_old_digits": bool(by["constrained"]["share_old"] > by["unconstrained"]["share_old"]),
        "constrained_fd_lower": bool(by["constrained"]["fd"] < by["unconstrained"]["fd"]),
    }
    return rows, checks
