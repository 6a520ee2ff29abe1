"""NAMM groundwork: benchmark generators and constraint distances, the ICNN mirror map, the NAMM fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cdcore.constraints import make as make_constraint
from cdcore.config.namm import NammCfg
from cdcore.methods.namm.fit import build_nets, fit_namm
from cdcore.methods.namm.evaluate import evaluate_namm
from cdcore.config.namm import task_cfg
from cdcore.nets.images import ICNN, ResnetGenerator, ScoreUNet
from cdcore.constraints.images import ImageConstraint, tile_states
from cdcore.data.images import _check, make_count, make_problem
from cdcore.constraints.images import untile_states


# The NAMM fits (double backprop through the ICNN on tiny images) run ~10x slower with 2 threads on a shared
# machine, so this module drops torch to one thread. It is NOT restored: raising the thread count again at run
# time (1 -> 2) makes MKL's batched LU fail later in the session (robot_arm prior in test_constraint_library:
# "Pivots given to lu_solve must all be >= 1"); staying at one thread is safe for the other tests.


# (problem, generator kwargs, expected image shape)
CASES = [
    ("burgers", dict(n=16), (64, 64, 1)),
    ("kolmogorov", dict(n=4, size="ci"), (64, 64, 2)),
    ("periodic_texture", dict(n=8), (64, 64, 1)),
    ("total_brightness", dict(n=16), (64, 64, 1)),
]


@pytest.mark.parametrize("name,kw,shape", CASES, ids=[c[0] for c in CASES])
def test_generator_data_satisfy_their_constraint_and_perturbations_do_not(name, kw, shape):
    p = make_problem(name, **kw)
    assert p.x.dtype == np.float32 and p.x.shape == (kw["n"], *shape)
    x = p.flat()
    d = p.constraint.distance(x)
    assert d.shape == (kw["n"],)
    assert float(d.max()) <= p.tol
    # a small positive perturbation (1% of the pixel scale) must break the constraint clearly
    scale = float(np.abs(p.x).mean())
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).abs()
    d_bad = p.constraint.distance(x + 0.01 * scale * noise)
    assert float(d_bad.min()) > 100 * p.tol
    # the same set is reachable by name from the constraint library, with the same distance
    kwargs = {"size": "ci"} if name == "kolmogorov" else {}
    lib = make_constraint(name, **kwargs)
    assert isinstance(lib, ImageConstraint) and lib.dim == x.shape[1]
    torch.testing.assert_close(lib.distance(x), d)


def test_generator_check_raises_on_infeasible_data():
    p = make_problem("burgers", n=4)
    bad = p.x.copy()
    bad[:, :, 10:] += 0.05
    with pytest.raises(ValueError, match="violate the constraint"):
        _check("burgers", p.constraint, bad, p.tol)


def test_burgers_distance_is_mean_abs_euler_residual():
    p = make_problem("burgers", n=2)
    x = p.flat().clone()
    x.view(2, 64, 64)[:, 5, 20] += 1.0  # one pixel off by 1: it enters its own column's residual once
    d = p.constraint.distance(x)
    assert float(d.min()) >= 1.0 / (64 * 63) - 1e-6


def test_kolmogorov_tiling_round_trip():
    s = np.random.default_rng(0).standard_normal((3, 8, 4, 4, 2))
    img = tile_states(s, 2, 4)
    assert img.shape == (3, 8, 16, 2)
    np.testing.assert_array_equal(img[:, 4:8, 4:8], s[:, 5])  # row 1, col 1 -> state 5 (row-major)
    np.testing.assert_array_equal(untile_states(img, 2, 4), s)


def test_count_images_hold_eight_separated_bright_sources():
    p = make_count(n=3, size="ci")
    assert p.x.shape == (3, 128, 128, 1) and p.x.min() >= 0 and p.x.max() <= 1
    for img, c in zip(p.x[..., 0], p.extra["centres"]):
        assert len(c) == 8
        sep = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))[np.triu_indices(8, 1)]
        assert sep.min() > 5
        peaks = img[c[:, 0].astype(int), c[:, 1].astype(int)]
        assert np.median(peaks) > np.median(img)


def test_count_generator_checks_a_given_counter():
    class Zero(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x.sum(dim=(1, 2, 3))[:, None] * self.w

    with pytest.raises(ValueError, match="violate the constraint"):
        make_count(n=2, counter=Zero())


def test_icnn_map_has_symmetric_positive_definite_jacobian():
    torch.manual_seed(0)
    alpha = 0.9
    net = ICNN(channels=1, n_filters=8, n_layers=2, alpha=alpha, init_scale=0.5)
    x = torch.randn(3, 1, 5, 5)

    def g_single(xi):
        return net.g(xi[None])[0].reshape(-1)

    J = torch.func.vmap(torch.func.jacrev(g_single))(x).reshape(3, 25, 25).detach()
    scale = J.abs().max()
    assert float((J - J.transpose(1, 2)).abs().max()) <= 1e-5 * float(scale)
    eig = torch.linalg.eigvalsh(0.5 * (J + J.transpose(1, 2)))
    assert float(eig.min()) >= alpha - 1e-4  # ∇²ψ ⪰ 0, so J = (1−α)∇²ψ + αI ⪰ αI
    assert float(eig.max()) > alpha + 0.1  # ψ is not trivial: the test probes a real Hessian


def test_icnn_clamp_keeps_weights_nonnegative():
    net = ICNN(channels=1, n_filters=4, n_layers=2)
    with torch.no_grad():
        for w in net.nonneg_parameters():
            w.sub_(1.0)
    net.clamp_nonneg()
    assert all(float(w.detach().min()) >= 0 for w in net.nonneg_parameters())


def test_nets_shapes():
    f = ResnetGenerator(2, nf=8, n_down=1, n_blocks=1, residual=False, activation="none")
    assert f(torch.randn(2, 2, 16, 32)).shape == (2, 2, 16, 32)
    assert ScoreUNet(2, nf=8)(torch.randn(2, 2, 16, 32), torch.rand(2)).shape == (2, 2, 16, 32)


def _torus_shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@pytest.mark.parametrize("f_down", [0, 1])
def test_circular_f_commutes_with_torus_shifts_and_keeps_periodic_images_periodic(f_down):
    """Circular padding makes f equivariant on the torus, so a 2×2-tiled (periodic) input comes out periodic; the
    zero-padded f of the same weights breaks both near the borders (the test can fail)."""
    torch.manual_seed(0)
    fc = ResnetGenerator(1, nf=8, n_down=f_down, n_blocks=2, padding="circular").eval()
    fz = ResnetGenerator(1, nf=8, n_down=f_down, n_blocks=2, padding="zeros").eval()
    with torch.no_grad():   # larger weights than the N(0, 0.02) init, so the borders matter
        for p in [*fc.parameters(), *fz.parameters()]:
            if p.dim() == 4:
                p.mul_(20.0)
    x = torch.randn(3, 1, 16, 16)
    periodic = make_constraint("periodic_texture", tile=8)
    tiled = x[:, :, :8, :8].repeat(1, 1, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(fc(_torus_shift(x, 2, 6)), _torus_shift(fc(x), 2, 6), atol=1e-5, rtol=1e-4)
        assert float(periodic.distance(tiled.permute(0, 2, 3, 1).reshape(3, -1)).max()) == 0.0
        out_c = fc(tiled).permute(0, 2, 3, 1).reshape(3, -1)
        out_z = fz(tiled).permute(0, 2, 3, 1).reshape(3, -1)
    assert float(periodic.distance(out_c).max()) < 1e-5
    assert float(periodic.distance(out_z).min()) > 1e-3
    with pytest.raises(ValueError, match="padding"):
        ResnetGenerator(1, padding="reflect")


def test_circular_score_unet_commutes_with_even_torus_shifts():
    """The score net of the periodic textures: equivariant to even shifts (one stride-2 level), not to odd ones."""
    torch.manual_seed(0)
    net = ScoreUNet(1, nf=8, padding="circular").eval()
    with torch.no_grad():
        net.outp[-1].weight.normal_(0.0, 0.5)   # the zero-initialised output layer would make ε ≡ 0
        x, t = torch.randn(2, 1, 16, 16), torch.rand(2)
        torch.testing.assert_close(net(_torus_shift(x, 8, 2), t), _torus_shift(net(x, t), 8, 2), atol=1e-5,
                                   rtol=1e-4)
        zeros = ScoreUNet(1, nf=8).eval()
        zeros.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("up.")}, strict=False)
        assert float((zeros(_torus_shift(x, 8, 2), t) - _torus_shift(zeros(x, t), 8, 2)).abs().max()) > 1e-3


def test_cfg_is_strict():
    with pytest.raises(Exception):
        NammCfg(sigma_maxx=0.1)
    with pytest.raises(Exception):
        NammCfg(sigma_max=-1.0)
    assert task_cfg("kolmogorov").sigma_max == 0.5


def test_fit_reduces_cycle_loss_on_a_tiny_problem():
    p = make_problem("total_brightness", n=48, image=16)
    cfg = task_cfg("total_brightness", "ci", steps=80, batch_size=8, lr=2e-3, log_every=20)
    torch.manual_seed(0)
    g0, f0 = build_nets(1, cfg)
    before = evaluate_namm(g0, f0, p.x, p.constraint, cfg.sigma_max)
    seen = []
    g, f, hist = fit_namm(p.x, p.constraint, cfg, seed=0, on_progress=lambda s, parts: seen.append(s))
    after = evaluate_namm(g, f, p.x, p.constraint, cfg.sigma_max)
    assert len(hist["loss"]) == 80 and np.isfinite(hist["loss"]).all()
    assert seen == [0, 20, 40, 60, 79]
    assert after["cyc"] <= before["cyc"] / 3
    assert after["constr_f_noisy"] <= before["constr_f_noisy"] / 3
    assert all(float(w.detach().min()) >= 0 for w in g.nonneg_parameters())


def test_fit_refuses_infeasible_data():
    p = make_problem("total_brightness", n=8, image=16)
    with pytest.raises(ValueError, match="violate the constraint"):
        fit_namm(p.x * 1.1, p.constraint, task_cfg("total_brightness", "ci", steps=1))


def test_mirror_diffusion_trains_samples_and_runs_mirror_dps():
    from cdcore.config.namm import MdmCfg
    from cdcore.dynamics.schedules import VPSDE
    from cdcore.methods.namm.train import fit_mdm, mirror_data
    from cdcore.methods.namm.sample import mirror_dps, sample_mdm

    p = make_problem("total_brightness", n=32, image=16)
    torch.manual_seed(0)
    g, f = build_nets(1, task_cfg("total_brightness", "ci"))
    y = mirror_data(g, p.x)
    assert y.shape == (32, 1, 16, 16)
    a, s = VPSDE().marginal(torch.tensor([1e-3, 0.5, 1.0]))
    torch.testing.assert_close(a**2 + s**2, torch.ones(3))
    net, hist = fit_mdm(y, MdmCfg(steps=60, batch_size=16, lr=2e-3, nf=8), seed=0)
    assert np.mean(hist["loss"][-10:]) < 0.7 * np.mean(hist["loss"][:10])
    ys, xs = sample_mdm(net, (1, 16, 16), n=3, steps=20, f=f)
    assert ys.shape == xs.shape == (3, 1, 16, 16) and torch.isfinite(xs).all() and float(xs.min()) >= 0
    obs = torch.from_numpy(p.x[:1]).permute(0, 3, 1, 2)[..., :4]
    post = mirror_dps(net, f, lambda z: z[..., :4], obs, (1, 16, 16), n=2, steps=10)
    assert post.shape == (2, 1, 16, 16) and torch.isfinite(post).all()
    cg = mirror_dps(net, None, lambda z: z[..., :4], obs, (1, 16, 16), n=2, steps=10, mirror=False,
                    constraint=p.constraint, constraint_weight=200.0)
    assert torch.isfinite(cg).all()


@pytest.mark.parametrize("name", ["burgers", "kolmogorov", "periodic_texture", "total_brightness"])
def test_image_constraint_rebuilds_from_its_recorded_arguments_in_a_fresh_library(name):
    """The library knows the image sets without importing their module first, and ``init_kwargs`` is all a
    data file must record to rebuild the very set (the same residual on the same images)."""
    from cdcore.constraints import make

    p = make_problem(name, n=3, **({"size": "ci"} if name == "kolmogorov" else {}))
    again = make(name, **p.constraint.init_kwargs())
    assert again.spec() == p.constraint.spec()
    x = p.flat().double()
    torch.testing.assert_close(again.h(x), p.constraint.h(x), rtol=0, atol=0)


def test_a_diverged_namm_fit_raises_the_divergence_error_every_method_raises(monkeypatch):
    """NAMM raised FloatingPointError, which the pipeline did not know as deterministic and retried twice."""
    import cdcore.methods.namm.fit as fit_mod
    from cdcore.methods.errors import DivergenceError

    p = make_problem("total_brightness", n=8, image=16)
    real = fit_mod.namm_loss

    def poisoned(*a, **k):
        loss, parts = real(*a, **k)
        return loss * float("nan"), {**parts, "loss": float("nan")}

    monkeypatch.setattr(fit_mod, "namm_loss", poisoned)
    with pytest.raises(DivergenceError, match="NAMM loss is not finite at step 0"):
        fit_namm(p.x, p.constraint, task_cfg("total_brightness", "ci", steps=2, batch_size=4))
