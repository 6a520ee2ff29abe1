"""Dual training under KL constraints (issue 5): the dual update, the mixture result, the loop, data, evaluation.

The mixture claim "constrained class share = e^{−b_i}" (dual.md §1.2) is tested in
two honest halves, because a loss threshold b̃ is only an *unknown* affine image
of a KL budget b: (1) the dual ascent on the exact KL slacks of disjoint-support
mixtures converges to w_i = e^{−b_i} (Theorem 2, analytic); (2) a trained
ε-model's samples follow the mixture q_mix^(λ) predicted from its λ (Theorem 1),
on well-separated 1-D clusters where shares are read off by nearest centre.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cdcore.data.digits import DigitsCfg, load_digits_split, load_mnist_idx, read_idx, write_idx
from cdcore.methods.dual.evaluate import (
    EvalClassifier,
    bbse_correct,
    evaluate_digits,
    fit_classifier,
    frechet_distance,
    kl_to_uniform,
    tv_to_uniform,
)
from cdcore.methods.dual import DDPMCfg, DataConstraint, Denoiser, DenoiserCfg, DistillConstraint, DualAscent, DualAscentCfg, DualCfg, DualData, DualTrainCfg, SamplerCfg, build_denoiser, draw_eps, draw_losses, load_dual, oracle_lambdas, predicted_shares, sample_ddpm, save_dual, train_dual, train_finetune, uniform_labels
from cdcore.config.dual import FinetuneCfg
from cdcore.methods.landing import DivergenceError

CENTRES = np.array([-1.5, 0.0, 1.5])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets on a shared 2-core box: intra-op threads only add synchronisation stalls."""
    torch.set_num_threads(1)  # the session already runs at one thread (tests/conftest.py); never raise it again
    yield
PI_TOY = (0.8, 0.1, 0.1)


# ----- helpers ----------------------------------------------------------------
def toy_data(n=2000, pi=PI_TOY, sd=0.1, seed=0):
    """Three well-separated 1-D clusters (gap 15 sd): supports are disjoint to numerical precision."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=pi)
    x = CENTRES[y] + sd * rng.normal(size=n)
    return x[:, None].astype(np.float32), y


def toy_cfg(steps=1000, **dual) -> DualCfg:
    return DualCfg(
        schedule=DDPMCfg(T=50, beta_start=1e-3, beta_end=0.2, t_min=1),   # ᾱ_T ≈ e^{-5}
        model=DenoiserCfg(hidden=64, depth=2, time_features=8),
        train=DualTrainCfg(steps=steps, primal_batch=256, lr=3e-3, warmup=50, ema=0.99, log_every=100),
        dual=DualAscentCfg(**dual),
        sampler=SamplerCfg(clip=None),
    )


def cluster_shares(x: torch.Tensor) -> np.ndarray:
    lab = np.abs(x.numpy()[:, :1] - CENTRES[None]).argmin(1)
    return np.bincount(lab, minlength=3) / len(lab)


# ----- configuration ------------------------------------------------------------
def test_config_rejects_bad_values():
    DualCfg.model_validate({"dual": {"threshold": [0.1, 0.2]}})
    with pytest.raises(ValidationError, match="extra"):
        DualCfg.model_validate({"dual": {"lamda": 1.0}})
    with pytest.raises(ValidationError):
        DualAscentCfg(threshold=[0.1, -0.2])
    with pytest.raises(ValidationError):
        DualAscentCfg(lr=0.0)
    with pytest.raises(ValidationError, match="fixed_lambdas"):
        DualAscentCfg(mode="fixed")
    with pytest.raises(ValidationError, match="t_min"):
        DDPMCfg(T=10, t_min=11)
    with pytest.raises(ValidationError, match="beta_end"):
        DDPMCfg(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValidationError, match="not noise"):
        DDPMCfg(T=200, beta_start=1e-4, beta_end=0.02)                 # ᾱ_T ≈ 0.13
    with pytest.raises(ValidationError):
        DigitsCfg(minority=[4, 4])


# ----- dual update -------------------------------------------------------------
def test_dual_step_projects_to_nonnegative():
    d = DualAscent(3, lr=0.5)
    lam = d.step([1.0, 0.2, 0.5], [0.5, 0.5, 0.5])
    assert lam.tolist() == pytest.approx([0.25, 0.0, 0.0])          # 0 + 0.5·(−0.3) projected to 0
    lam = d.step([0.1, 0.9, 0.5], [0.5, 0.5, 0.5])
    assert lam.tolist() == pytest.approx([0.05, 0.2, 0.0])
    lam = d.step([0.0, 0.9, 0.5], [0.5, 0.5, 0.5])
    assert lam.tolist() == pytest.approx([0.0, 0.4, 0.0])           # 0.05 − 0.25 → 0, not negative
    with pytest.raises(ValueError):
        DualAscent(2, lr=1.0, init=[0.1, -0.1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 5)), min_size=1, max_size=20),
       st.floats(0.01, 2.0), st.floats(0.0, 3.0))
def test_dual_step_matches_projected_formula(seq, lr, gamma):
    d = DualAscent(1, lr=lr, resilience=gamma)
    lam = 0.0
    for L, b in seq:
        lam = max(lam + lr * (L - b - 2 * gamma * lam), 0.0)
        got = float(d.step([L], [b])[0])
        assert got >= 0.0
        assert got == pytest.approx(lam, abs=1e-12)


def test_resilient_fixed_point_is_loss_over_two_gamma():
    gamma, L = 1.5, np.array([0.3, 0.9, 0.05])
    b = np.array([0.0, 0.0, 0.2])                                   # third: satisfied → λ = 0
    d = DualAscent(3, lr=0.2, resilience=gamma)                     # |1 − 2γη| = 0.4 < 1: contraction
    for _ in range(200):
        d.step(L, b)
    want = np.maximum((L - b) / (2 * gamma), 0)
    assert d.lam.numpy() == pytest.approx(want, abs=1e-9)
    assert d.fixed_point(L, b).numpy() == pytest.approx(want)
    assert want[0] == pytest.approx(0.1) and want[2] == 0.0
    with pytest.raises(ValueError):
        DualAscent(1, lr=0.1).fixed_point([1.0], [0.0])


# ----- per-constraint batch losses ------------------------------------------------
class IdentityEps(Denoiser):
    """ε̂(x_t, t) = x_t; for x_0 ≡ a its loss has the closed form E = mean_t[ᾱ_t a² + (1 − √(1−ᾱ_t))²]."""

    def forward(self, x, t, y=None):
        return x


def test_each_constraint_loss_uses_its_own_data_and_the_schedule():
    sched = DDPMCfg(T=40, beta_start=1e-3, beta_end=0.3, t_min=3)
    model = IdentityEps(4, DenoiserCfg(hidden=8, depth=1, time_features=2), sched)
    abar = model.abar.double()[sched.t_min - 1:]

    def expected(a):
        return float((abar * a * a + (1 - (1 - abar).sqrt()) ** 2).mean())

    values = {"obj": 0.0, "c1": 1.0, "c2": -2.0}
    x0 = torch.full((50, 4), values["obj"])
    cons = [DataConstraint(torch.full((30, 4), values[n]), name=n) for n in ("c1", "c2")]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    draws = [draw_eps(model, x0[torch.randint(0, 50, (40_000,), generator=gens[0])], None, gens[0])]
    draws += [c.draw(model, 40_000, g) for c, g in zip(cons, gens[1:])]
    assert all(int(d.t.min()) >= sched.t_min and int(d.t.max()) <= sched.T for d in draws)
    losses = draw_losses(model, draws).tolist()
    for got, name in zip(losses, ("obj", "c1", "c2")):
        assert got == pytest.approx(expected(values[name]), rel=0.03), name
    assert losses[2] > losses[1] + 0.5 > losses[0] + 0.5             # distinct data → distinct losses


def test_lambda_zero_reproduces_unconstrained_training():
    x, y = toy_data(400)
    base = train_dual(DualData(x=torch.tensor(x)), toy_cfg(steps=40, mode="unconstrained"), seed=3)
    full = DualData.from_labelled(x, y, [1, 2])
    unc = train_dual(full, toy_cfg(steps=40, mode="unconstrained"), seed=3)
    inactive = train_dual(full, toy_cfg(steps=40, mode="dual", threshold=50.0), seed=3)
    assert np.all(inactive.lambdas == 0)
    for out in (unc, inactive):
        for p, q in zip(base.model.parameters(), out.model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert unc.constraint_losses.shape == (len(unc.objective), 2)   # measured and logged even at λ ≡ 0
    active = train_dual(full, toy_cfg(steps=40, mode="fixed", fixed_lambdas=[1.0, 0.0]), seed=3)
    assert not torch.allclose(next(base.model.parameters()), next(active.model.parameters()))


# ----- mixture result ------------------------------------------------------------
@pytest.mark.parametrize("pi_constrained", [0.0, 0.0135])   # q^i disjoint from q (Thm 2) / inside q (fairness)
def test_dual_ascent_on_exact_kl_slacks_gives_exp_minus_b(pi_constrained):
    """Disjoint supports: KL(q^i‖q_mix^(λ)) = −log w_i(λ); at the dual optimum w_i = e^{−b_i} or λ_i = 0."""
    K, cons = 10, [4, 5, 7]
    pi = np.full(K, 1.0)
    pi[cons] = 0.0
    pi = pi / pi.sum() * (1 - 3 * pi_constrained)
    pi[cons] = pi_constrained
    b = np.array([math.log(10), math.log(8), math.log(1.0 / 0.002)])
    # λ = 0 gives KL = ∞ when q^i lies outside q: start just above 0 (the iterates never return to 0 there)
    d = DualAscent(3, lr=0.002, init=[0.01] * 3 if pi_constrained == 0 else None)   # η·|∂slack/∂λ| < 2
    for _ in range(4000):
        w = predicted_shares(pi, cons, d.lam.numpy())[cons]
        d.step(-np.log(w), b)
    w = predicted_shares(pi, cons, d.lam.numpy())
    assert w[4] == pytest.approx(0.1, abs=1e-3)
    assert w[5] == pytest.approx(1 / 8, abs=1e-3)
    if pi_constrained > 0:                                             # already above 0.002: inactive, λ = 0
        assert d.lam[2] == 0.0 and w[7] > 0.002
    else:                                                              # q^7 ∉ q: the budget binds
        assert w[7] == pytest.approx(0.002, abs=1e-4)
    assert w.sum() == pytest.approx(1.0)


def test_oracle_lambdas_make_the_mixture_uniform():
    split = load_digits_split(DigitsCfg(rho=0.1, seed=1))
    lam = oracle_lambdas(split.class_shares, [4, 5, 7])
    assert predicted_shares(split.class_shares, [4, 5, 7], lam) == pytest.approx(np.full(10, 0.1), abs=1e-9)
    tgt = np.array([0.05, 0.95])                                     # class 0 already above target → λ = 0
    assert oracle_lambdas(np.array([0.5, 0.5]), [0], tgt) == [0.0]


def test_trained_model_samples_the_fixed_lambda_mixture():
    """Theorem 1 through the training loop: loss_0 + Σλ_i loss_i trains q_mix^(λ); shares within 0.04 (n=4000)."""
    x, y = toy_data()
    lam = [0.5, 0.2]
    out = train_dual(DualData.from_labelled(x, y, [1, 2]), toy_cfg(steps=1000, mode="fixed", fixed_lambdas=lam), seed=0)
    want = predicted_shares(np.array(PI_TOY), [1, 2], lam)          # (0.47, 0.35, 0.18) vs π = (0.8, 0.1, 0.1)
    got = cluster_shares(sample_ddpm(out.model, 4000, seed=1, cfg=SamplerCfg(clip=None)))
    assert got == pytest.approx(want, abs=0.04)
    assert np.all(out.lambdas == np.array(lam))


def test_dual_run_moves_lambda_and_samples_follow_it():
    """Resilient dual run (b̃ = 0, γ = 1): λ leaves 0, sits at mean loss/(2γ), and samples follow the λ-mixture."""
    x, y = toy_data()
    rows = []
    cfg = toy_cfg(steps=1200, mode="dual", resilience=1.0, lr=0.25)
    out = train_dual(DualData.from_labelled(x, y, [1, 2]), cfg, seed=0, on_progress=lambda s, r: rows.append((s, r)))
    tail = len(out.lambdas) // 3
    lam_tail = out.lambdas[-tail:].mean(0)
    assert np.all(out.lambdas >= 0) and np.all(lam_tail > 0.05)
    assert lam_tail == pytest.approx(out.constraint_losses[-tail:].mean(0) / 2.0, rel=0.03)
    want = predicted_shares(out.class_shares, [1, 2], lam_tail)
    got = cluster_shares(sample_ddpm(out.model, 4000, seed=1, cfg=cfg.sampler))
    assert got == pytest.approx(want, abs=0.05)
    assert got[1:].sum() > 0.3                                       # vs 0.2 in the biased data
    assert [s for s, _ in rows] == list(range(100, 1201, 100))
    assert {"lambda/class1", "loss/class2", "slack/class1", "mixture/class2", "share_pred/0"} <= set(rows[-1][1])
    assert rows[-1][1]["lambda/class1"] == pytest.approx(out.lambdas[-1][0])


def test_conditional_baseline_with_uniform_labels_is_balanced():
    x, y = toy_data()
    cfg = toy_cfg(steps=600, mode="unconstrained").model_copy(
        update={"model": DenoiserCfg(hidden=64, depth=2, time_features=8, num_classes=3)})
    out = train_dual(DualData(x=torch.tensor(x), y=torch.tensor(y)), cfg, seed=0)
    labels = uniform_labels(3000, 3, seed=0)
    assert np.bincount(labels.numpy()).tolist() == [1000, 1000, 1000]
    s = sample_ddpm(out.model, 3000, seed=2, labels=labels, cfg=cfg.sampler)
    assert cluster_shares(s) == pytest.approx([1 / 3] * 3, abs=0.04)
    with pytest.raises(ValueError, match="labels"):
        sample_ddpm(out.model, 10, seed=0)


# ----- fine-tuning, sampler, checkpoint --------------------------------------------
def test_distillation_constraint_and_finetune():
    x, _ = toy_data(400)
    cfg = toy_cfg(steps=30, mode="dual", threshold=0.0, lr=1.0)
    teacher = build_denoiser(1, cfg, seed=5)
    other = build_denoiser(1, cfg, seed=6)
    for x0 in (None, torch.randn(64, 1)):
        c = DistillConstraint(teacher, x0=x0)
        g = torch.Generator().manual_seed(0)
        assert float(draw_losses(teacher, [c.draw(teacher, 128, g)])[0]) == 0.0
        assert float(draw_losses(other, [c.draw(other, 128, g)])[0].detach()) > 0.0
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for source in ("noise", "samples"):
        ft = cfg.model_copy(update={"finetune": FinetuneCfg(source=source, teacher_samples=100)})
        out = train_finetune(x, teacher, ft, seed=0)
        assert out.constraint_names == ["pretrained"] and out.constraint_classes == [None]
        assert out.constraint_losses[0, 0] < 1e-3                    # starts at the teacher
        assert out.final_lambdas[0] > 0                              # b̃ = 0: any drift is penalised
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())   # the teacher stays frozen


def test_sampler_is_seeded_and_checkpoint_round_trips(tmp_path):
    x, y = toy_data(300)
    cfg = toy_cfg(steps=20, mode="fixed", fixed_lambdas=[0.3, 0.1])
    out = train_dual(DualData.from_labelled(x, y, [1, 2]), cfg, seed=0)
    a = sample_ddpm(out.model, 50, seed=7, cfg=cfg.sampler)
    assert a.shape == (50, 1) and torch.equal(a, sample_ddpm(out.model, 50, seed=7, cfg=cfg.sampler))
    assert not torch.equal(a, sample_ddpm(out.model, 50, seed=8, cfg=cfg.sampler))
    clipped = sample_ddpm(out.model, 50, seed=7, cfg=SamplerCfg(clip=0.5, variance="beta"))
    assert float(clipped.abs().max()) <= 0.5 + 1e-5
    save_dual(tmp_path / "m.pt", out, cfg)
    model, cfg2, meta = load_dual(tmp_path / "m.pt")
    assert cfg2 == cfg and np.array_equal(meta["lambdas"], out.lambdas)
    assert torch.equal(sample_ddpm(model, 50, seed=7, cfg=cfg.sampler), a)


def _resume_cfg(**train) -> DualCfg:
    """Relative thresholds + resilience: λ, the running objective mean and the dual-block sums all carry state."""
    cfg = toy_cfg(steps=60, mode="dual", resilience=1.0, lr=0.25, threshold=0.5, threshold_kind="relative")
    tc = cfg.train.model_copy(update={"primal_batch": 64, "warmup": 10, "log_every": 5, "checkpoint_every": 10,
                                      **train})
    return cfg.model_copy(update={"model": DenoiserCfg(hidden=32, depth=1, time_features=4), "train": tc})


class _Killed(Exception):
    pass


def test_dual_training_resumed_after_a_crash_ends_bit_identical(tmp_path):
    """Crash at step 25 (mid dual block: N = 3 does not divide 20), resume from the step-20 checkpoint."""
    x, y = toy_data(300)
    data = DualData.from_labelled(x, y, [1, 2])
    cfg = _resume_cfg()
    log = lambda step, row: None                                     # noqa: E731  (rows are kept only when sent)
    full = train_dual(data, cfg, seed=4, on_progress=log)
    assert full.lambdas[-1].min() > 0                                # λ really moved

    def die(step, row):
        if step == 25:
            raise _Killed

    ckpt = tmp_path / "dual.ckpt"
    with pytest.raises(_Killed):
        train_dual(data, cfg, seed=4, on_progress=die, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["step"] == 20
    resumed = train_dual(data, cfg, seed=4, on_progress=log, checkpoint=ckpt)
    assert resumed.resumed_from == 20 and full.resumed_from == 0
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for f in ("lambdas", "constraint_losses", "thresholds", "objective"):
        assert np.array_equal(getattr(full, f), getattr(resumed, f)), f
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]   # noqa: E731
    assert strip(resumed.history) == strip(full.history)            # rows 5…20 from the checkpoint, 25… re-run
    assert torch.load(ckpt, weights_only=True)["step"] == 60
    again = train_dual(data, cfg, seed=4, checkpoint=ckpt)           # a finished run is read back, not re-trained
    assert again.resumed_from == 60 and np.array_equal(again.lambdas, full.lambdas)
    assert not list(tmp_path.glob("*.tmp*"))


def test_checkpoint_of_another_config_is_refused(tmp_path):
    x, y = toy_data(300)
    data = DualData.from_labelled(x, y, [1, 2])
    ckpt = tmp_path / "dual.ckpt"
    train_dual(data, _resume_cfg(steps=10), seed=0, checkpoint=ckpt)
    before = ckpt.read_bytes()
    for cfg, seed in ((_resume_cfg(steps=10, lr=1e-3), 0), (_resume_cfg(steps=10), 1)):
        with pytest.raises(ValueError, match=r"dual\.ckpt: checkpoint was written by another configuration.*delete it"):
            train_dual(data, cfg, seed=seed, checkpoint=ckpt)
    assert ckpt.read_bytes() == before                               # refused, not overwritten
    out = train_dual(data, _resume_cfg(steps=10, checkpoint_every=3), seed=0, checkpoint=ckpt)
    assert out.resumed_from == 10                                    # checkpoint_every is not part of the run
    save_dual(tmp_path / "model.pt", out, _resume_cfg(steps=10))
    with pytest.raises(ValueError, match="not a dual-training checkpoint"):
        train_dual(data, _resume_cfg(steps=10), seed=0, checkpoint=tmp_path / "model.pt")


def test_nan_lagrangian_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import cdcore.methods.dual.train as dual_mod

    x, y = toy_data(300)
    data = DualData.from_labelled(x, y, [1, 2])
    cfg = _resume_cfg(steps=30)
    real, calls = dual_mod.draw_losses, {"n": 0}

    def poisoned(model, draws):
        calls["n"] += 1
        out = real(model, draws)
        return out * float("nan") if calls["n"] >= 15 else out

    monkeypatch.setattr(dual_mod, "draw_losses", poisoned)
    ckpt = tmp_path / "dual.ckpt"
    with pytest.raises(DivergenceError, match=r"nan at step 15.*last good checkpoint kept at .*dual\.ckpt"):
        train_dual(data, cfg, seed=0, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 10 and all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    monkeypatch.setattr(dual_mod, "draw_losses", real)
    assert train_dual(data, cfg, seed=0, checkpoint=ckpt).resumed_from == 10   # and it resumes from there


# ----- data -------------------------------------------------------------------------
def test_digits_split_is_balanced_disjoint_and_seeded():
    s = load_digits_split(DigitsCfg(rho=0.1, seed=0))
    assert s.x_train.shape[1] == 64 and s.x_train.min() == -1.0 and s.x_train.max() == 1.0
    assert len(set(np.bincount(s.y_test))) == 1 and len(set(np.bincount(s.y_train))) == 1
    n_tr = np.bincount(s.y_train)[0]
    counts = np.bincount(s.y_biased, minlength=10)
    assert all(counts[c] == round(0.1 * n_tr) for c in (4, 5, 7))
    assert all(counts[c] == n_tr for c in range(10) if c not in (4, 5, 7))
    rows = lambda a: {r.tobytes() for r in a}                                    # noqa: E731
    assert not rows(s.x_test) & rows(s.x_train)                    # (the digits set has no duplicate images)
    assert rows(s.x_biased) <= rows(s.x_train)
    assert s.class_shares == pytest.approx(counts / counts.sum())
    assert len(s.constraint_sets()[4]) == counts[4]
    again, other = load_digits_split(DigitsCfg(seed=0)), load_digits_split(DigitsCfg(seed=1))
    assert np.array_equal(again.x_biased, s.x_biased) and not np.array_equal(other.x_biased, s.x_biased)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    lab = rng.integers(0, 10, size=7, dtype=np.uint8)
    write_idx(tmp_path / "i", img, compress)
    write_idx(tmp_path / "l", lab, compress)
    assert np.array_equal(read_idx(tmp_path / "i"), img)
    x, y = load_mnist_idx(tmp_path / "i", tmp_path / "l")
    assert x.shape == (7, 20) and x.dtype == np.float32 and y.tolist() == lab.tolist()
    assert x == pytest.approx(img.reshape(7, -1) / 127.5 - 1, abs=1e-6)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


# ----- evaluation ---------------------------------------------------------------------
def test_bbse_recovers_true_shares_and_divergences():
    C = np.array([[0.9, 0.05, 0.0, 0.05], [0.2, 0.7, 0.1, 0.0], [0.0, 0.1, 0.8, 0.1]])   # 3 classes + reject
    p = np.array([0.6, 0.3, 0.1])
    assert bbse_correct(C.T @ p, C) == pytest.approx(p, abs=1e-9)
    assert kl_to_uniform(np.full(4, 0.25)) == 0.0 and tv_to_uniform(np.full(4, 0.25)) == 0.0
    assert kl_to_uniform(np.array([1.0, 0, 0, 0])) == pytest.approx(math.log(4))
    assert tv_to_uniform(np.array([1.0, 0, 0, 0])) == pytest.approx(0.75)


def test_frechet_distance_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(size=(20000, 3)) * [1.0, 1.0, 0.5] + [1.0, 0, 0]
    assert frechet_distance(a, b) == pytest.approx(1.0 + (2 - 1) ** 2, rel=0.05)   # |Δμ|² + Σ(σa − σb)²
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


class _Stub(torch.nn.Module):
    """Logits set by the first pixel: p ≥ 0 → confident class ⌊p·10⌋ ; p < 0 → flat (unrecognised)."""

    def forward(self, x):
        p = x[:, 0]
        logits = torch.zeros(len(x), 10)
        cls = (p.clamp(0, 0.999) * 10).long()
        logits[torch.arange(len(x)), cls] = torch.where(p >= 0, 20.0, 0.0)
        return logits

    def features(self, x):
        return x[:, :4]


def test_evaluation_counts_low_confidence_and_flags_copies():
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, size=(200, 16)).astype(np.float32)
    test_x = rng.uniform(-1, 1, size=(100, 16)).astype(np.float32)
    test_x[:, 0] = np.repeat(np.arange(10) / 10 + 0.05, 10)
    test_y = np.repeat(np.arange(10), 10)
    eye = np.hstack([np.eye(10), np.zeros((10, 1))])
    clf = EvalClassifier(_Stub(), 1.0, np.eye(10), eye, 0.5, train, test_x, test_y)
    gen = train[:100].copy()                          # exact copies of training images
    gen[:, 0] = np.r_[np.full(40, -0.5), np.full(60, 0.45)]   # 40 unrecognised, 60 of class 4
    train[:100] = gen
    r = evaluate_digits(gen, clf, (test_x, test_y), train, minority=(4, 5, 7), n_boot=50, fd_repeats=2)
    assert r["frac_low_conf"] == pytest.approx(0.4)
    assert r["hist_raw"][4] == pytest.approx(1.0)                 # low-confidence samples not assigned
    assert r["minority_share_raw"] == pytest.approx(1.0) and r["max_min_ratio_raw"] == float("inf")
    assert r["hist_corrected"][4] == pytest.approx(1.0, abs=1e-6)
    assert r["near_copy_frac"] > 0.9 and r["near_copy_real_frac"] < 0.1
    assert r["fd"] > r["fd_floor"]
    lo, hi = r["frac_low_conf_ci"]
    assert lo < 0.4 < hi


@pytest.fixture(scope="module")
def digits_classifier():
    s = load_digits_split(DigitsCfg(seed=0))
    return s, fit_classifier(s.x_train, s.y_train, s.x_test, s.y_test, seed=0, epochs=12)


def test_classifier_on_real_digits(digits_classifier):
    s, clf = digits_classifier
    assert clf.accuracy >= 0.93
    assert clf.confusion.sum(1) == pytest.approx(np.ones(10)) and np.trace(clf.confusion) / 10 >= 0.93
    real = evaluate_digits(s.x_test, clf, (s.x_test, s.y_test), s.x_biased, n_boot=50, fd_repeats=2)
    biased = evaluate_digits(s.x_biased, clf, (s.x_test, s.y_test), s.x_biased, n_boot=50, fd_repeats=2)
    assert real["tv_uniform_corrected"] < 0.05 and real["minority_share_corrected"] == pytest.approx(0.3, abs=0.05)
    assert biased["minority_share_corrected"] == pytest.approx(36 / 890, abs=0.02)
    assert biased["kl_uniform_corrected_ci"][0] > real["kl_uniform_corrected_ci"][1]
    assert biased["fd"] > 3 * real["fd_floor"]
    assert biased["near_copy_frac"] == 1.0 and real["near_copy_frac"] < 0.05
