"""Landing diffusion: forward paths, the path loss, training, resume, and the samplers."""


import pytest
import torch

from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg, TrainCfg
from cdcore.constraints import Sphere
from cdcore.data.synthetic import vmf_mixture
from cdcore.dynamics import DynamicsConfig, NoiseSchedule, forward_paths, sample
from cdcore.methods.landing import (
    DivergenceError,
    build_model,
    sample_landing,
    schedule_from,
    train_landing,
)

S2 = Sphere(3)


def vmf_tensors(n=1200, kappa=50.0, seed=0):
    x, means = vmf_mixture(n, 1, kappa, seed)
    x = torch.tensor(x, dtype=torch.float32)
    return x[: int(0.8 * n)], x[int(0.8 * n):], torch.tensor(means[0], dtype=torch.float32)


def test_schedule_integrated_variance_matches_quadrature():
    for kind in ("linear", "geometric", "constant"):
        s = NoiseSchedule(kind, 0.1, 2.0, 3.0, 10)
        t = 1.7
        grid = torch.linspace(0, t, 20001, dtype=torch.float64)
        quad = torch.trapezoid(torch.tensor([s.sigma(float(u)) ** 2 for u in grid]), grid)
        assert s.integrated_variance(t) == pytest.approx(float(quad), rel=1e-6)


@pytest.mark.parametrize("kind", ["overdamped", "underdamped"])
@pytest.mark.parametrize("landing", ["explicit", "implicit"])
def test_forward_paths_stay_on_the_sphere(kind, landing):
    """Explicit landing holds the residual near E|ξ_T|²/(2α) (tangent steps push out by |y|²/2, landing
    removes a fraction α σ² Δt per step); the implicit step removes it at every step."""
    x0, _, mu = vmf_tensors()
    sched = NoiseSchedule("linear", 0.01, 1.0, 4.0, 100)
    alpha = 40.0  # largest rate 40 * 1 * 0.04 = 1.6 < 2: stable
    res = forward_paths(S2, x0, sched, DynamicsConfig(kind=kind, landing=landing, alpha=alpha))
    assert res.paths.shape == (len(x0), 101, 3)
    assert res.drop_rate == 0.0
    assert S2.violation(res.x).max() < 1e-5          # after the terminal projection
    along = S2.violation(res.paths.reshape(-1, 3))
    if landing == "explicit":
        assert along.mean() < 1.0 / alpha and along.max() < 0.5
    else:
        assert along.max() < 1e-5
    # noising spreads the data: the mean direction decays
    assert (res.x @ mu).mean() < 0.8 * (x0 @ mu).mean()


def test_unstable_explicit_landing_warns_and_takes_the_implicit_step():
    sched = NoiseSchedule("linear", 0.01, 1.0, 4.0, 100)  # alpha sigma^2 dt up to 60*0.98*0.04 = 2.35
    cfg = DynamicsConfig(landing="explicit", alpha=60.0)
    x0, _, _ = vmf_tensors(200)
    with pytest.warns(RuntimeWarning, match="explicit landing is unstable"):
        res = forward_paths(S2, x0, sched, cfg)
    # at rate 2.35 an explicit step would multiply the residual by -1.35 per step and blow up
    assert S2.violation(res.paths.reshape(-1, 3)).max() < 0.5


def test_zero_score_sampler_keeps_the_uniform_prior_uniform():
    """With s = 0 the backward chain is a tangent random walk from the uniform law: it must stay uniform."""
    sched = NoiseSchedule("linear", 0.01, 1.0, 4.0, 40)
    res = sample(lambda x, v, k: torch.zeros_like(x), S2, sched, DynamicsConfig(), 20000,
                 generator=torch.Generator().manual_seed(0))
    assert res.drop_rate == 0.0 and res.nfe == 40
    assert S2.violation(res.x).max() < 1e-5
    assert res.x.mean(0).norm() < 0.03
    cov = res.x.T @ res.x / len(res.x)
    assert torch.allclose(cov, torch.eye(3, dtype=cov.dtype) / 3, atol=0.02)


def _tiny(kind="overdamped", steps=300):
    if kind == "overdamped":
        sc = ScheduleCfg(N=20)
        dc = DynamicsCfg()
    else:
        sc = ScheduleCfg(sigma_min=0.1, sigma_max=2.0, T=2.0, N=10)
        dc = DynamicsCfg(kind="underdamped")
    tc = TrainCfg(steps=steps, batch_size=256, refresh_every=100, val_every=100, val_paths=64, checkpoint_every=50)
    return sc, dc, ModelCfg(hidden=64, depth=2, time_features=4), tc


@pytest.mark.parametrize("kind", ["overdamped", "underdamped"])
def test_tiny_training_lowers_the_path_loss_and_concentrates_samples(kind):
    train, val, mu = vmf_tensors()
    sc, dc, mc, tc = _tiny(kind)
    sched = schedule_from(sc)
    untrained = build_model(3, sched, dc, mc)
    from cdcore.methods.landing.train import _simulate
    from cdcore.methods.landing import dynamics_from, full_path_loss
    val_paths = _simulate(S2, val[:64], sched, dynamics_from(dc), seed=7919)
    before = full_path_loss(untrained, S2, sched, dynamics_from(dc), val_paths)
    out = train_landing(S2, train, val, sched, dc, mc, tc, seed=0)
    after = out.history[-1]["val_loss"]
    assert after < before - 1.0, (before, after)
    for handling in ("landing", "projection"):
        res = sample_landing(out.model, S2, sched, dc, 1000, handling=handling, seed=1)
        kept = res.x[~res.dropped]
        assert S2.violation(kept).max() < 1e-5
        # uniform on S^2 has E[mu.x] = 0; the data has ~0.98
        assert (kept @ mu.to(kept.dtype)).mean() > 0.5
    assert sample_landing(out.model, S2, sched, dc, 500, seed=1).drop_rate == 0.0


class _Killed(Exception):
    pass


def _train_until_killed(*args, at: int = 45, **kwargs) -> None:
    """Run ``train_landing`` and stop it once step ``at`` is logged, as a crash between checkpoints would."""
    def die(step, row):
        if step >= at:
            raise _Killed

    with pytest.raises(_Killed):
        train_landing(*args, on_progress=die, **kwargs)


def test_resumed_training_ends_with_the_same_weights(tmp_path):
    train, val, _ = vmf_tensors(600)
    sc, dc, mc, tc = _tiny(steps=60)
    tc = tc.model_copy(update={"checkpoint_every": 20, "refresh_every": 30})
    sched = schedule_from(sc)
    full = train_landing(S2, train, val, sched, dc, mc, tc, seed=3)

    ckpt = tmp_path / "run.ckpt"
    tc_log = tc.model_copy(update={"val_every": 1000})
    _train_until_killed(S2, train, val, sched, dc, mc, tc_log, seed=3, checkpoint_path=ckpt)
    resumed = train_landing(S2, train, val, sched, dc, mc, tc_log, seed=3, checkpoint_path=ckpt)
    assert resumed.resumed_from == 40
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_selection_returns_the_best_validation_point_and_survives_a_resume(tmp_path):
    """``select`` scores the EMA model at each validation point; the best point's weights come back, also when the
    run was killed after that point and resumed from its checkpoint (the release's best-validation checkpoint)."""
    train, val, _ = vmf_tensors(600)
    sc, dc, mc, tc = _tiny(steps=60)
    tc = tc.model_copy(update={"val_every": 20, "checkpoint_every": 20, "refresh_every": 30})
    sched = schedule_from(sc)

    def scorer(scores, snapshots):
        def select(model):
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
            return scores[len(snapshots) - 1]
        return select

    snaps: list = []
    full = train_landing(S2, train, val, sched, dc, mc, tc, seed=3, select=scorer([3.0, 1.0, 2.0], snaps))
    assert full.best_step == 40 and [r["val_score"] for r in full.history if "val_score" in r] == [3.0, 1.0, 2.0]
    state = full.model.state_dict()
    assert all(torch.equal(state[k], snaps[1][k]) for k in state)
    assert not all(torch.equal(state[k], snaps[2][k]) for k in state)  # the last point's weights differ

    ckpt = tmp_path / "run.ckpt"
    _train_until_killed(S2, train, val, sched, dc, mc, tc, seed=3, checkpoint_path=ckpt, select=scorer([3.0, 1.0], []))
    resumed = train_landing(S2, train, val, sched, dc, mc, tc, seed=3, checkpoint_path=ckpt, select=scorer([2.0], []))
    assert resumed.resumed_from == 40 and resumed.best_step == 40
    assert all(torch.equal(a, b) for a, b in zip(state.values(), resumed.model.state_dict().values()))


def test_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import cdcore.methods.landing.train as landing

    train, val, _ = vmf_tensors(300)
    sc, dc, mc, tc = _tiny(steps=30)
    tc = tc.model_copy(update={"checkpoint_every": 10})
    real = landing.path_loss_terms
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 15 else out

    monkeypatch.setattr(landing, "path_loss_terms", poisoned)
    ckpt = tmp_path / "c.ckpt"
    with pytest.raises(DivergenceError, match=r"nan at step 15.*last good checkpoint"):
        train_landing(S2, train, val, schedule_from(sc), dc, mc, tc, checkpoint_path=ckpt)
    assert torch.load(ckpt, weights_only=True)["step"] == 10


@pytest.mark.parametrize("constraint_name,kind,landing", [
    ("sphere", "overdamped", "implicit"), ("sphere", "underdamped", "explicit"),
    ("so10", "overdamped", "explicit"), ("dipeptide", "overdamped", "implicit")])
def test_landing_sampling_loop_never_reads_back_to_the_host(constraint_name, kind, landing):
    """No .item()/bool() inside the step loop (PyTorch profiler): on a GPU every step stays queued on the device."""
    from torch.profiler import ProfilerActivity, profile

    from cdcore.constraints import make

    c = make(constraint_name)
    sched = NoiseSchedule("linear", 0.1, 1.0, 1.0, 5)
    cfg = DynamicsConfig(kind=kind, landing=landing, alpha=1.0, terminal_projection=False)
    x0 = c.sample_prior(16, generator=torch.Generator().manual_seed(0))
    score = lambda x, v, k: -0.1 * x  # noqa: E731
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        res = sample(score, c, sched, cfg, 16, x_init=x0)
    names = [e.name for e in prof.events()]
    assert "aten::_local_scalar_dense" not in names, [n for n in names if "scalar" in n or "item" in n]
    assert torch.isfinite(res.x).all()


def test_terminal_landing_steps_rescue_trajectories_the_frozen_jacobian_newton_drops():
    """Dipeptide conformations thrown 0.5 Å off Σ: the terminal Newton projection (Jacobian frozen at the start)
    fails on some; five full-rate landing steps (the default) first bring every one within its reach (three
    leave two of these out of it), and samples already
    within tolerance are not moved."""
    from cdcore.constraints import make
    from cdcore.dynamics import land_to_tolerance

    c = make("dipeptide")
    gen = torch.Generator().manual_seed(0)
    x0 = c.sample_prior(200, generator=gen).double()
    x = x0 + 0.5 * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    x[:20] = x0[:20]                                     # already on Σ
    assert int((~c.project(x, tol=1e-5).converged).sum()) >= 10
    z, taken = land_to_tolerance(c, x, DynamicsConfig().terminal_landing_steps, 1e-5)
    assert torch.equal(z[:20], x[:20]) and (taken[:20] == 0).all()
    assert (taken[20:] > 0).all()
    proj = c.project(z, tol=1e-5)
    assert proj.converged.all()
    assert c.violation(proj.x).max() <= 1e-5


def test_sampler_with_terminal_landing_drops_nothing_where_projection_alone_drops():
    """End to end: a score that throws samples off Σ at the last step; with terminal landing steps no trajectory
    is dropped, with none (the official sampler) some are."""
    from cdcore.constraints import make

    c = make("dipeptide")
    sched = NoiseSchedule("constant", 1.0, 1.0, 0.1, 4)
    x0 = c.sample_prior(64, generator=torch.Generator().manual_seed(1)).double()
    kick = 30.0 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=x0.dtype)
    score = lambda x, v, k: kick if k == 1 else torch.zeros_like(x)  # noqa: E731
    drops = {}
    for steps in (0, 5):
        cfg = DynamicsConfig(kind="overdamped", landing="explicit", alpha=1.0, terminal_landing_steps=steps)
        res = sample(score, c, sched, cfg, 64, generator=torch.Generator().manual_seed(3), x_init=x0.clone())
        drops[steps] = int(res.dropped.sum())
        if steps:
            assert c.violation(res.x).max() <= 1e-5
    assert drops[0] > 0 and drops[5] == 0, drops


def test_terminal_polish_and_projection_run_and_return_in_float64(monkeypatch):
    """A float32 residual near a coordinate of 17 Å rounds at the 1e-5 tolerance itself (dipeptide data sit that
    far out), which dropped samples that were on the set, and float32 storage alone puts a projected sample 1e-5
    off: the terminal algebra and its result must not inherit float32."""
    from cdcore.constraints import make

    c = make("dipeptide")
    seen = []
    project, polish = c.project, c.polish
    monkeypatch.setattr(c, "project", lambda x, *a, **k: (seen.append(("project", x.dtype)), project(x, *a, **k))[1])
    monkeypatch.setattr(c, "polish", lambda x: (seen.append(("polish", x.dtype)), polish(x))[1])
    x0 = (c.sample_prior(32, generator=torch.Generator().manual_seed(1)).double() + 17.0).float()
    zero = lambda x, v, k: torch.zeros_like(x)  # noqa: E731
    cfg = DynamicsConfig(kind="overdamped", landing="implicit", alpha=75.0)
    res = sample(zero, c, NoiseSchedule("constant", 1.0, 1.0, 0.1, 4), cfg, 32,
                 generator=torch.Generator().manual_seed(2), x_init=x0)
    assert res.x.dtype == torch.float64 and not res.dropped.any()
    assert ("project", torch.float64) in seen and all(d == torch.float64 for _, d in seen), seen
    assert float(c.violation(res.x).max()) <= 1e-5


def test_step_active_removes_the_rows_a_landing_step_acted_on_and_only_those():
    """An implicit step that crosses the box's wall from inside lands the row at g = −ε: inactive at both ends,
    yet the jump is landing, not motion; the velocity read off the two positions must not contain it."""
    from cdcore.constraints import make
    from cdcore.dynamics import step_active

    box = make("box", dim=2, eps=0.1)
    x = torch.tensor([[0.95, 0.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.2, 0.05], [0.05, 0.05]], dtype=torch.float64)
    z = box.land_implicit(x, y)
    assert torch.allclose(z[0, 0], torch.tensor(0.9, dtype=torch.float64))  # landed at g = −ε
    assert not box.active_set(x).any() and not box.active_set(z).any()
    act = step_active(box, x, z)
    assert act[0].tolist() == [True, False, False, False] and not act[1].any(), act  # rows: x − 1, y − 1, −1 − x, −1 − y
    dyn = DynamicsConfig(kind="underdamped")
    from cdcore.dynamics.landing import _velocity

    v = _velocity(box, dyn, x, z, 0.1)
    assert torch.allclose(_velocity(box, dyn, x, z, 0.1, at_start=True)[0], v[0], atol=1e-5)  # same rows at x
    assert torch.allclose(v[0], torch.tensor([0.0, 0.5], dtype=torch.float64), atol=1e-5)  # the wall jump removed
    assert torch.allclose(v[1], y[1] / 0.1)  # a free step keeps its whole velocity
    # a step across the whole set was not landed on the wall it left: only the far wall's row (else both opposite
    # rows would be active and the Gram matrix singular)
    across = step_active(box, torch.tensor([[1.05, 0.0]], dtype=torch.float64), torch.tensor([[-1.05, 0.0]], dtype=torch.float64))
    assert across[0].tolist() == [False, False, True, False], across


def test_underdamped_velocity_gain_starts_at_zero_and_old_weights_load_unchanged():
    """The per-step velocity gain is zero-initialised and weights saved before it existed load as the plain MLP."""
    sched = NoiseSchedule("linear", 0.1, 2.0, 2.0, 10)
    model = build_model(3, sched, DynamicsCfg(kind="underdamped", gamma=5.0), ModelCfg(hidden=16, depth=2))
    assert torch.equal(model.vgain, torch.zeros(11))
    x, v = torch.randn(4, 3), torch.randn(4, 3)
    legacy = {k: t for k, t in model.state_dict().items() if k != "vgain"}
    with torch.no_grad():
        model.vgain.fill_(0.7)
    moved = model(x, v, 3)
    model.load_state_dict(legacy)
    assert torch.equal(model.vgain, torch.zeros(11))
    plain = model(x, v, 3)
    assert torch.allclose(moved - plain, 0.7 * v * model.scales[3], atol=1e-6)


def test_bf16_network_leaves_the_constraint_algebra_in_the_samples_dtype():
    """precision bf16 runs the network's matmuls in bf16 while landing and the terminal projection act on the
    float32 samples: the residual stays the fp32 run's, and with the same noise the samples barely move."""
    sched = NoiseSchedule(kind="linear", sigma_min=0.05, sigma_max=1.0, T=2.0, N=20)
    dc = DynamicsCfg(kind="overdamped", landing="implicit", alpha=50.0)
    model = build_model(3, sched, dc, ModelCfg(hidden=32, depth=2, time_features=4))
    seen: list = []
    model.mlp.net[0].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    full = sample_landing(model, S2, sched, dc, 256, seed=1)
    assert set(seen) == {torch.float32}
    seen.clear()
    half = sample_landing(model, S2, sched, dc, 256, seed=1, precision="bf16")
    assert set(seen) == {torch.bfloat16}
    assert half.x.dtype == full.x.dtype and float(S2.violation(half.x.double()).max()) <= 1e-5
    moved = (half.x - full.x).norm(dim=1)
    assert 0 < float(moved.median()) < 0.02


def test_tf32_off_cuda_is_refused_with_the_fix():
    sched = NoiseSchedule(kind="linear", sigma_min=0.05, sigma_max=1.0, T=2.0, N=4)
    dc = DynamicsCfg(kind="overdamped", landing="implicit", alpha=50.0)
    model = build_model(3, sched, dc, ModelCfg(hidden=8, depth=1, time_features=2))
    with pytest.raises(ValueError, match="CUDA tensor-core mode; on cpu use 'fp32' or 'bf16'"):
        sample_landing(model, S2, sched, dc, 8, precision="tf32")


@pytest.mark.parametrize("name, kind", [("so10", "overdamped"), ("robot_arm", "overdamped"), ("box", "underdamped"),
                                        ("torus", "overdamped")])
def test_explicit_landing_shares_one_geometry_without_changing_a_bit(name, kind, monkeypatch):
    """An explicit landing step projects its tangent step and lands with one geometry at x (the robot arm spent
    40 % of its sampling time building it twice); the samples must be those of the unshared path, bit for bit,
    and SO(n)'s closed forms must not be replaced by the generic Gram."""
    import cdcore.dynamics.landing as dyn_mod
    from cdcore.constraints import make

    c = make(name, **({"tangent_mode": "manifold"} if name == "so10" else {}))
    sched = NoiseSchedule(kind="linear", sigma_min=0.05, sigma_max=0.5, T=1.0, N=6)
    cfg = DynamicsConfig(kind=kind, landing="explicit", alpha=5.0, gamma=2.0)
    score = lambda x, v, k: -0.3 * x  # noqa: E731
    x0 = c.sample_prior(8, generator=torch.Generator().manual_seed(0)).double()
    calls = {"n": 0}
    geometry = type(c).geometry

    def counted(self, x, active=None):
        calls["n"] += 1
        return geometry(self, x, active)

    monkeypatch.setattr(type(c), "geometry", counted)
    shared = sample(score, c, sched, cfg, 8, generator=torch.Generator().manual_seed(1), x_init=x0)
    n_shared, calls["n"] = calls["n"], 0
    monkeypatch.setattr(dyn_mod, "_shared_geometry", lambda *a: None)
    plain = sample(score, c, sched, cfg, 8, generator=torch.Generator().manual_seed(1), x_init=x0)
    assert torch.equal(shared.x, plain.x) and torch.equal(shared.dropped, plain.dropped)
    if name == "so10":
        assert n_shared == calls["n"]  # closed forms: no geometry to share
    else:
        assert n_shared <= calls["n"] - sched.N  # one geometry fewer per step


def _exact_linear_reverse(kind: str, N: int, n: int = 20_000):
    """Gaussian data in R², ambient dynamics: the reverse kernel's Bayes-optimal mean is linear in (x, v̂), so a
    per-step linear score that minimises the library's own path loss (one Newton step: the loss is quadratic in
    its weights) is the exact minimiser. Returns the data's mean and covariance and the sampler's samples."""
    from cdcore.methods.landing import overdamped_step_loss, underdamped_step_loss

    d, plane = 2, Sphere(2)  # ambient ("none"): the constraint is never consulted
    gen = torch.Generator().manual_seed(0)
    L = torch.tensor([[0.4, 0.0], [0.25, 0.15]], dtype=torch.float64)
    m = torch.tensor([0.5, -0.3], dtype=torch.float64)
    x0 = m + torch.randn(n, d, generator=gen, dtype=torch.float64) @ L.T
    sched = NoiseSchedule("linear", 0.1, 1.5, 1.0, N)
    dyn = DynamicsConfig(kind=kind, handling="none", gamma=5.0, terminal_projection=False)
    paths = forward_paths(plane, x0, sched, dyn, generator=gen).paths
    n_in = (2 * d if kind == "underdamped" else d) + 1

    def linear(theta):
        def score(x, v, k):
            cols = [x] + ([v] if v is not None else []) + [torch.ones_like(x[:, :1])]
            return torch.cat(cols, 1) @ theta.view(n_in, d)
        return score

    idx, thetas = torch.arange(n), []
    for k in range(N):
        kk = torch.full((n,), k)

        def loss(theta):
            g = torch.Generator().manual_seed(1)
            if kind == "underdamped":
                return underdamped_step_loss(linear(theta), plane, sched, dyn.gamma, paths, idx, kk, g, ambient=True).mean()
            return overdamped_step_loss(linear(theta), plane, sched, paths, idx, kk, ambient=True).mean()

        zero = torch.zeros(n_in * d, dtype=torch.float64)
        grad = torch.autograd.functional.jacobian(loss, zero)
        hess = torch.autograd.functional.hessian(loss, zero)
        thetas.append(zero - torch.linalg.solve(hess, grad))
    start = paths[:, N][torch.randperm(n, generator=gen)]  # the forward's terminal law, unpaired from the data
    res = sample(lambda x, v, k: linear(thetas[k - 1])(x, v, k), plane, sched, dyn, n, generator=gen, x_init=start)
    return m, L @ L.T, res.x


def _cov_error(x, cov):
    return float((torch.cov(x.T) - cov).norm() / cov.norm())


def test_underdamped_loss_minimiser_in_the_sampler_reproduces_gaussian_data():
    """The kinetic path loss and the kinetic sampler agree on every index (σ_k, a_k, the network at t_{k+1}, the
    velocity read at the step's start): the loss's exact minimiser, run through the sampler from the forward's end,
    gives back the data's law. Using σ_{k+1} in the sampler's step, or the velocity scaled by the previous step's
    h, puts the covariance over 20 % off; as written it is 1 % off at N = 20."""
    m, cov, x = _exact_linear_reverse("underdamped", 20)
    assert float((x.mean(0) - m).norm()) < 0.02
    assert _cov_error(x, cov) < 0.06


def test_overdamped_loss_minimiser_in_the_sampler_converges_at_first_order():
    """The overdamped reverse kernel's variance is the forward step's, exact only as Δt → 0: with the exact mean
    the covariance error is first order in 1/N (10 % at N = 25 → 2.4 % at N = 100 here), which pins that the loss
    and the sampler agree on σ_k, Δt and the network's time index."""
    m, cov, x_coarse = _exact_linear_reverse("overdamped", 25)
    _, _, x_fine = _exact_linear_reverse("overdamped", 100)
    coarse, fine = _cov_error(x_coarse, cov), _cov_error(x_fine, cov)
    assert float((x_fine.mean(0) - m).norm()) < 0.02
    assert fine < 0.05
    assert coarse > 2.0 * fine


def test_path_loss_projects_with_the_tangent_the_sampler_steps_with():
    """The loss's P is the sampler's: SO(n) in closed-form mode is trained with ½(U − R Uᵀ R), as it samples,
    not with the generic Jacobian projection (which differs off the manifold, where landing iterates sit)."""
    from cdcore.constraints import Constraint
    from cdcore.constraints.son import SpecialOrthogonal
    from cdcore.methods.landing.loss import _projector
    from cdcore.methods.landing import overdamped_step_loss

    c = SpecialOrthogonal(4, tangent_mode="manifold")
    gen = torch.Generator().manual_seed(0)
    x = c.sample_prior(32, generator=gen).double()
    x = x + 3e-2 * torch.randn(x.shape, generator=gen, dtype=x.dtype)  # off SO(4), as a forward iterate may be
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    P = _projector(c, x, ambient=False)
    assert torch.allclose(P(v), c.tangent_on_manifold(x, v), atol=1e-12)
    assert float((P(v) - Constraint.tangent(c, x, v)).abs().max()) > 1e-3  # the generic one would differ here

    sched = NoiseSchedule("constant", 0.5, 0.5, 1.0, 4)
    paths = torch.stack([x + 1e-2 * k * v for k in range(5)], dim=1)  # (B, N+1, d)
    idx, k = torch.arange(8), torch.tensor([0, 1, 2, 3] * 2)

    class Zero(torch.nn.Module):
        def forward(self, x, v, k):
            return torch.zeros_like(x)

    loss = overdamped_step_loss(Zero(), c, sched, paths, idx, k)
    x_k, x_k1 = paths[idx, k], paths[idx, k + 1]
    r = c.tangent_on_manifold(x_k1, x_k - x_k1) / (0.5 * sched.dt ** 0.5)
    assert torch.allclose(loss, 0.5 * r.pow(2).sum(dim=1), rtol=1e-10)


def test_one_ema_warms_up_and_reads_checkpoints_of_torchs_averaged_model():
    """d_t = min(decay, (1+t)/(10+t)); a landing checkpoint written before the one EMA (torch's AveragedModel,
    keys 'module.*' and 'n_averaged') resumes into it with the same averaged weights."""
    from torch.optim.swa_utils import AveragedModel

    from cdcore.methods.ema import EMA

    net = torch.nn.Linear(3, 2)
    ema = EMA(net, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    with torch.no_grad():
        net.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(net, 0)
    torch.testing.assert_close(ema.module.weight, 0.1 * before + 0.9 * net.weight)
    old = AveragedModel(net)
    old.update_parameters(net)
    again = EMA(torch.nn.Linear(3, 2), 0.999)
    again.load_state_dict(old.state_dict())
    assert torch.equal(again.module.weight, net.weight) and torch.equal(again.module.bias, net.bias)
