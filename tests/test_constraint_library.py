"""The constraint library: SO(n), dipeptide, robot arm, implicit surfaces, convex sets.

Every set is checked for: Jacobian = central finite differences (float64), a
feasible prior after the Newton projection, a tangent projection that annihilates
the active rows, landing / projection behaviour, and residuals against an
independent reference formula. The shipped dipeptide and robot data must satisfy
their constraints (skipped when ../shared is absent).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cdcore.constraints import (
    Ball,
    BumpySphere,
    Box,
    Constraint,
    Dipeptide,
    Polytope,
    RobotArm,
    Simplex,
    SpecialOrthogonal,
    TangleCube,
    Torus,
    available,
    make,
)

F64 = torch.float64
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CDCORE_SHARED", REPO.parent / "shared"))
DIPEPTIDE_DATA = SHARED / "data" / "dipeptide" / "dipeptide_refined_phi_psiwin.npy"
ROBOT_DATA = SHARED / "data" / "robot_arm" / "robot_7dof_joints_paths.npy"
ROBOT_REF = SHARED / "data" / "robot_arm" / "robot_7dof_joints_ref.npy"

NAMES = ["so10", "son3", "dipeptide", "robot_arm", "torus", "tangle_cube", "bumpy_sphere",
         "bumpy_sphere_z2", "box", "simplex", "ball", "polytope"]
EQUALITY_ONLY = ["so10", "son3", "torus", "tangle_cube", "bumpy_sphere", "bumpy_sphere_z2"]


def build(name: str) -> Constraint:
    if name == "son3":
        return make("son", n=3)
    if name == "bumpy_sphere_z2":
        return make("bumpy_sphere", harmonic="z2", a=0.2)
    if name == "box":
        return make("box", dim=3)
    if name == "simplex":
        return make("simplex", dim=4)
    if name == "ball":
        return make("ball", dim=3, radius=1.5)
    if name == "polytope":
        return make("polytope", dim=3, n_faces=5, seed=1)
    return make(name)


_PRIOR_CACHE: dict[str, torch.Tensor] = {}


def prior(name: str, n: int = 6) -> torch.Tensor:
    """float64 prior samples (cached: the robot and dipeptide priors run a Newton projection)."""
    if name not in _PRIOR_CACHE:
        gen = torch.Generator().manual_seed(1234)
        _PRIOR_CACHE[name] = build(name).sample_prior(8, generator=gen).to(F64)
    return _PRIOR_CACHE[name][:n].clone()


def near(name: str, n: int = 6, scale: float = 1e-3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = prior(name, n)
    return x + scale * torch.randn(x.shape, generator=gen, dtype=F64)


def fd_jacobian(fn, x: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """Central differences, all 2d perturbed copies evaluated in one batch: (B, k, d)."""
    B, d = x.shape
    E = step * torch.eye(d, dtype=x.dtype)
    xp = (x.unsqueeze(1) + E).reshape(B * d, d)
    xm = (x.unsqueeze(1) - E).reshape(B * d, d)
    diff = (fn(xp) - fn(xm)).reshape(B, d, -1) / (2 * step)
    return diff.transpose(1, 2)


def rel_err(A: torch.Tensor, B: torch.Tensor) -> float:
    num = (A - B).flatten(1).norm(dim=1)
    den = B.flatten(1).norm(dim=1).clamp_min(1e-12)
    return float((num / den).max())


# ----- registration ---------------------------------------------------------
def test_all_sets_registered_and_specs_are_json():
    for name in ["so10", "son", "dipeptide", "robot_arm", "torus", "tangle_cube", "bumpy_sphere",
                 "box", "simplex", "ball", "polytope"]:
        assert name in available()
    for name in NAMES:
        c = build(name)
        spec = json.loads(json.dumps(c.spec()))
        assert spec["dim"] == c.dim and spec["n_eq"] == c.n_eq and spec["n_ineq"] == c.n_ineq
    assert (make("so10").dim, make("so10").n_eq) == (100, 55)
    assert (make("dipeptide").n_eq, make("dipeptide").n_ineq, make("dipeptide").eps) == (1, 2, 0.05)
    assert (make("robot_arm").dim, make("robot_arm").n_eq, make("robot_arm").n_ineq) == (140, 86, 140)


# ----- Jacobians --------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_central_differences(name):
    c = build(name)
    x = near(name, n=4, scale=1e-2)
    if c.n_eq:
        J = c.h_jac(x)
        assert J.shape == (4, c.n_eq, c.dim)
        assert rel_err(J, fd_jacobian(c.h, x)) < 1e-5
    if c.n_ineq:
        J = c.g_jac(x)
        assert J.shape == (4, c.n_ineq, c.dim)
        assert rel_err(J, fd_jacobian(c.g, x)) < 1e-5


@pytest.mark.parametrize("name", ["so10", "robot_arm", "tangle_cube", "box", "simplex", "ball", "polytope"])
def test_analytic_jacobian_matches_torch_func(name):
    c = build(name)
    x = near(name, n=3, scale=1e-2)
    if c.n_eq:
        assert torch.allclose(c.h_jac(x), Constraint.h_jac(c, x), atol=1e-10)
    if c.n_ineq:
        assert torch.allclose(c.g_jac(x), Constraint.g_jac(c, x), atol=1e-10)


# ----- residuals against independent formulas -------------------------------
def test_son_residual_is_upper_triangle_of_gram():
    c = SpecialOrthogonal(4)
    x = torch.randn(5, 16, dtype=F64)
    R = x.reshape(5, 4, 4).numpy()
    M = R @ R.transpose(0, 2, 1) - np.eye(4)
    iu = np.triu_indices(4)
    assert np.allclose(c.h(x).numpy(), M[:, iu[0], iu[1]], atol=1e-12)


def _np_dihedral(p0, p1, p2, p3):
    """Praxeolitic formula (a different route from the module's cross-product form)."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def test_dipeptide_residuals_against_numpy_dihedral():
    c = Dipeptide()
    X = near("dipeptide", n=6, scale=0.3).reshape(6, 10, 3).numpy()
    phi = _np_dihedral(*[X[:, i] for i in (1, 3, 4, 6)])
    psi = _np_dihedral(*[X[:, i] for i in (3, 4, 6, 8)])
    wrap = lambda a: np.arctan2(np.sin(a), np.cos(a))  # noqa: E731
    x = torch.from_numpy(X.reshape(6, 30))
    assert np.allclose(c.h(x)[:, 0].numpy(), wrap(phi - math.radians(-70)), atol=1e-10)
    assert np.allclose(c.phi(x).numpy(), phi, atol=1e-10)
    mid = wrap(psi - math.radians(150))
    assert np.allclose(c.g(x).numpy(), np.stack([mid - math.radians(20), -math.radians(20) - mid], 1), atol=1e-10)
    # on (−30°, 180°] the rows are literally ψ − 170° and 130° − ψ
    inside = (psi > math.radians(-30))
    g = c.g(x).numpy()
    assert np.allclose(g[inside, 0], psi[inside] - math.radians(170), atol=1e-10)
    assert np.allclose(g[inside, 1], math.radians(130) - psi[inside], atol=1e-10)


def test_dipeptide_residual_is_smooth_across_the_psi_branch_cut():
    """ψ crossing ±180° (just above the window) must not jump the inequality rows."""
    c = Dipeptide()
    # a dihedral over four points: rotate the last atom about the 4-6 bond
    base = near("dipeptide", n=1, scale=0.0).reshape(10, 3)
    p4, p6, p8 = base[4], base[6], base[8]
    axis = (p6 - p4) / (p6 - p4).norm()
    psi0 = float(c.psi(base.reshape(1, 30)))
    gs = []
    for target in (math.radians(179.0), math.radians(-179.0)):
        ang = target - psi0
        v = p8 - p6
        rot = (v * math.cos(ang) + torch.linalg.cross(axis, v) * math.sin(ang)
               + axis * (axis @ v) * (1 - math.cos(ang)))
        X = base.clone()
        X[8] = p6 + rot
        gs.append(c.g(X.reshape(1, 30))[0])
    assert torch.allclose(gs[0], torch.tensor([math.radians(9), -math.radians(49)], dtype=F64), atol=1e-8)
    assert torch.allclose(gs[1], torch.tensor([math.radians(11), -math.radians(51)], dtype=F64), atol=1e-8)


def _np_panda_fk(x: np.ndarray, flange: float = 0.107):
    """Homogeneous 4x4 modified-DH chain (independent of the module's rotation/position recursion)."""
    a = [0, 0, 0, 0.0825, -0.0825, 0, 0.088]
    d = [0.333, 0, 0.316, 0, 0.384, 0, 0]
    al = [0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2]

    def mdh(c, s, a, d, alpha):
        ca, sa = np.cos(alpha), np.sin(alpha)
        T = np.zeros(c.shape + (4, 4))
        T[..., 0, 0], T[..., 0, 1], T[..., 0, 3] = c, -s, a
        T[..., 1, 0], T[..., 1, 1], T[..., 1, 2], T[..., 1, 3] = s * ca, c * ca, -sa, -d * sa
        T[..., 2, 0], T[..., 2, 1], T[..., 2, 2], T[..., 2, 3] = s * sa, c * sa, ca, d * ca
        T[..., 3, 3] = 1
        return T

    c, s = x[..., :7], x[..., 7:]
    T = np.broadcast_to(np.eye(4), x.shape[:-1] + (4, 4)).copy()
    links = []
    for i in range(7):
        T = T @ mdh(c[..., i], s[..., i], a[i], d[i], al[i])
        links.append(T[..., :3, 3])
    T = T @ mdh(np.ones_like(c[..., 0]), np.zeros_like(c[..., 0]), 0, flange, 0)
    return np.stack(links, -2), T[..., :3, 3]


def test_robot_fk_and_residuals_against_homogeneous_chain():
    c = RobotArm()
    x = near("robot_arm", n=3, scale=0.05)
    links, ee = _np_panda_fk(x.reshape(3, 10, 14).numpy())
    L, E = c.fk(x)
    assert np.allclose(L.numpy(), links, atol=1e-12) and np.allclose(E.numpy(), ee, atol=1e-12)
    h = c.h(x).numpy()
    w = x.reshape(3, 10, 14).numpy()
    assert np.allclose(h[:, :10], ee[..., 2] - 0.205, atol=1e-12)
    assert np.allclose(h[:, 10:80], (w[..., :7] ** 2 + w[..., 7:] ** 2 - 1).reshape(3, 70), atol=1e-12)
    assert np.allclose(h[:, 80:83], ee[:, 0] - [0.4, -0.5, 0.205], atol=1e-12)
    assert np.allclose(h[:, 83:86], ee[:, -1] - [0.4, 0.5, 0.205], atol=1e-12)
    obs = np.array([[0.4, -0.3, 0.205], [0.4, 0.3, 0.205]])
    g = 0.1 - np.linalg.norm(links[..., None, :] - obs, axis=-1)
    assert np.allclose(c.g(x).numpy(), g.reshape(3, 140), atol=1e-12)
    # frames 1, 2 are fixed and frames 5, 6 coincide: links=(3, 4, 5, 7) keeps the distinct moving rows
    assert np.allclose(links[..., 0, :], [0, 0, 0.333]) and np.allclose(links[..., 1, :], [0, 0, 0.333])
    assert np.array_equal(links[..., 4, :], links[..., 5, :])
    d = RobotArm(links=(3, 4, 5, 7))
    assert d.n_ineq == 80
    assert np.allclose(d.g(x).numpy(), g[:, :, [2, 3, 4, 6]].reshape(3, 80), atol=1e-12)
    assert rel_err(d.g_jac(x), fd_jacobian(d.g, x)) < 1e-5


def test_robot_one_pass_geometry_equals_the_four_pass_one():
    """RobotArm.parts runs the FK chain once for h, g and both Jacobians; it must give the generic
    (h, ∂h), (g, ∂g) exactly, and a stack cut from given parts the one computed afresh, with the active set
    derived or given (the kinetic loss cuts two active sets from one evaluation)."""
    from cdcore.constraints.base import Constraint

    c = RobotArm(clearance=0.2)  # some obstacle rows active at the data
    x = near("robot_arm", n=4, scale=0.02)
    fast, generic = c.parts(x), Constraint.parts(c, x)
    assert all(torch.equal(a, b) for pa, pb in zip(fast, generic) for a, b in zip(pa, pb))
    for active in (None, torch.zeros(4, c.n_ineq, dtype=torch.bool)):
        given, afresh = c.stacked(x, active, fast), c.stacked(x, active)
        assert all(torch.equal(a, b) for a, b in zip(given, afresh))
        geo_given, geo = c.geometry(x, active, fast), c.geometry(x, active)
        assert torch.equal(geo_given.chol, geo.chol) and torch.equal(geo_given.J, geo.J)
    assert bool(c.stacked(x)[2].any())


def test_implicit_surfaces_are_signed_offsets_along_a_parametrisation():
    gen = torch.Generator().manual_seed(3)
    u, v = 2 * math.pi * torch.rand(2, 50, generator=gen, dtype=F64)
    t = 0.05 * torch.randn(50, generator=gen, dtype=F64)
    # torus: the point at distance r + t from the core circle has h = t
    R, r = 1.0, 0.4
    x = torch.stack([(R + (r + t) * torch.cos(v)) * torch.cos(u), (R + (r + t) * torch.cos(v)) * torch.sin(u),
                     (r + t) * torch.sin(v)], 1)
    assert torch.allclose(Torus(R, r).h(x)[:, 0], t, atol=1e-12)
    # bumpy sphere: radius 1 + a Y(u) + t along the direction u has h = t
    for harmonic in ("xyz", "z2"):
        c = BumpySphere(a=0.1, harmonic=harmonic)
        dirs = torch.randn(50, 3, generator=gen, dtype=F64)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        x = (1 + 0.1 * c.Y(dirs) + t).unsqueeze(1) * dirs
        assert torch.allclose(c.h(x)[:, 0], t, atol=1e-12)
        assert float(c.Y(dirs).abs().max()) <= 1.0 + 1e-12
    # tangle cube: the polynomial itself
    x = torch.randn(20, 3, generator=gen, dtype=F64)
    ref = (x**4 - 5 * x**2).sum(1) + 11.8
    assert torch.allclose(TangleCube().h(x)[:, 0], ref, atol=1e-12)


def test_convex_residuals():
    x = torch.tensor([[0.5, -2.0, 1.5]], dtype=F64)
    assert torch.equal(Box(3).g(x), torch.tensor([[-0.5, -3.0, 0.5, -1.5, 1.0, -2.5]], dtype=F64))
    assert torch.allclose(Ball(3, radius=2.0).g(x), torch.tensor([[math.sqrt(6.5) - 2.0]], dtype=F64))
    s = Simplex(3)
    assert torch.allclose(s.h(x), torch.tensor([[-1.0]], dtype=F64)) and torch.equal(s.g(x), -x)
    A = torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 2.0]], dtype=F64)
    p = Polytope(A, [1.0, 0.5])
    assert torch.allclose(p.g(x), torch.tensor([[-2.5, 4.5]], dtype=F64))
    assert torch.equal(p.g_jac(x)[0], A)


# ----- priors ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_prior_is_feasible_and_projection_keeps_it(name):
    c = build(name)
    x = prior(name, n=8)
    assert x.shape == (8, c.dim) and torch.isfinite(x).all()
    # sampled in the default dtype: feasible up to its rounding
    assert float(c.violation(x).max()) < 1e-4
    proj = c.project(x, tol=1e-7)
    assert bool(proj.converged.all())
    assert float(c.violation(proj.x).max()) < 1e-6
    assert float((proj.x - x).norm(dim=1).max()) < 1e-3  # already (nearly) on Σ: barely moves


def test_projected_draws_redraws_failed_proposals_and_names_the_set_when_none_converge():
    torus = build("torus")
    calls = []

    def half_nan(k):  # over half the proposals are unprojectable: redrawn, never returned
        calls.append(k)
        x = 3.0 * torch.randn(k, 3, generator=torch.Generator().manual_seed(len(calls)), dtype=F64)
        x[: k // 2 + 1] = float("nan")
        return x

    x = torus.projected_draws(half_nan, 11, tol=1e-9)
    assert x.shape == (11, 3) and torch.isfinite(x).all() and float(torus.violation(x).max()) <= 1e-9
    assert calls[:2] == [22, 8]  # at most 10 of the first 22 converge: a second, smaller round is drawn
    with pytest.raises(RuntimeError, match=r"torus prior: only 0 of 4 .* raise max_rounds"):
        torus.projected_draws(lambda k: torch.full((k, 3), float("nan"), dtype=F64), 4, max_rounds=3)


def test_son_haar_prior_has_positive_determinant_and_haar_moments():
    c = SpecialOrthogonal(10)
    R = c.sample_prior(2000, generator=torch.Generator().manual_seed(0)).to(F64).reshape(-1, 10, 10)
    assert bool((torch.linalg.det(R) > 0).all())
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(10, dtype=F64).expand(2000, 10, 10), atol=1e-5)
    tr = torch.diagonal(R, dim1=1, dim2=2).sum(1)
    # Haar on SO(10): E tr R = 0, E (tr R)² = 1 (standard errors ≈ 0.022 and 0.032 here)
    assert abs(float(tr.mean())) < 0.1
    assert abs(float((tr**2).mean()) - 1.0) < 0.15
    # SO(3) as well (det flip path exercised: half of the QR samples have det < 0)
    R3 = make("son", n=3).sample_prior(500, generator=torch.Generator().manual_seed(1)).reshape(-1, 3, 3)
    assert bool((torch.linalg.det(R3.to(F64)) > 0).all())


@pytest.mark.parametrize("name", ["torus", "tangle_cube", "bumpy_sphere"])
def test_synthetic_density_is_on_surface_and_non_uniform(name):
    c = build(name)
    x = c.sample_density(400, seed=0).to(F64)
    assert x.shape == (400, 3)
    assert float(c.violation(x).max()) < 1e-4
    assert torch.equal(c.sample_density(50, seed=5), c.sample_density(50, seed=5))  # reproducible
    # mass concentrates near the first centre direction compared with the prior
    centre = torch.tensor(c.density_centres[0], dtype=F64)
    centre = centre / centre.norm()
    near_centre = lambda p: float(((p / p.norm(dim=1, keepdim=True)) @ centre > 0.8).double().mean())  # noqa: E731
    uniformish = c.sample_prior(400, generator=torch.Generator().manual_seed(9)).to(F64)
    assert near_centre(x) > 1.5 * near_centre(uniformish) + 0.05


# ----- tangent projection ---------------------------------------------------
def rotate_psi(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Dipeptide conformations with ψ changed by ``degrees`` (atom 8 rotated about the 4-6 bond)."""
    X = x.reshape(-1, 10, 3).clone()
    axis = X[:, 6] - X[:, 4]
    axis = axis / axis.norm(dim=1, keepdim=True)
    v = X[:, 8] - X[:, 6]
    ang = math.radians(degrees)
    X[:, 8] = (X[:, 6] + v * math.cos(ang) + torch.linalg.cross(axis, v) * math.sin(ang)
               + axis * (axis * v).sum(1, keepdim=True) * (1 - math.cos(ang)))
    return X.reshape(-1, 30)


def with_active_rows(name: str) -> tuple[Constraint, torch.Tensor]:
    """A constraint and points near Σ of which some have active (violated) inequality rows."""
    c = build(name)
    x = near(name, n=6, scale=1e-2)
    if name == "dipeptide":
        x = torch.cat([x, rotate_psi(x[:3], 40.0)])
    elif name == "robot_arm":  # a larger clearance makes the closest links' rows active at the data
        c = RobotArm(clearance=0.2)
    elif name == "simplex":
        x = torch.cat([x, x[:3] - 0.35])
    elif c.n_ineq:
        x = torch.cat([x, 1.5 * x[:3] + 0.3])
    return c, x


@pytest.mark.parametrize("name", NAMES)
def test_tangent_projection_annihilates_active_rows(name):
    c, x = with_active_rows(name)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    geo = c.geometry(x)
    pv = c.tangent(x, v, geo)
    Jn = geo.J.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)
    resid = torch.einsum("bkd,bd->bk", geo.J, pv).abs().amax(dim=1, keepdim=True)
    assert float((resid / (Jn * v.norm(dim=1, keepdim=True))).max()) < 1e-5
    assert float((pv - c.tangent(x, pv, geo)).norm(dim=1).max() / v.norm(dim=1).max()) < 1e-4  # idempotent
    if c.n_ineq:
        assert bool(geo.active.any())
        # inactive rows are zero rows of J: no constraint acts there
        inactive = torch.cat([torch.zeros(x.shape[0], c.n_eq, dtype=torch.bool), ~geo.active], dim=1)
        assert float(geo.J[inactive].abs().max()) == 0.0


@pytest.mark.parametrize("n", [3, 10])
def test_son_analytic_tangent_equals_generic_on_manifold(n):
    c = make("son", n=n)
    x = c.sample_prior(16, generator=torch.Generator().manual_seed(2)).to(F64)
    x = c.project(x, tol=1e-12).x  # on SO(n) to float64 precision
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    generic = Constraint.tangent(c, x, v)
    closed = c.tangent_on_manifold(x, v)
    R, U = x.reshape(-1, n, n), v.reshape(-1, n, n)
    assert torch.allclose(closed, (0.5 * (U - R @ U.transpose(1, 2) @ R)).reshape(x.shape), atol=1e-14)
    assert float((c.tangent(x, v) - generic).abs().max()) < 1e-5
    assert float((closed - generic).abs().max()) < 1e-5
    assert float((c.tangent_exact(x, v) - generic).abs().max()) < 1e-5


def test_son_tangent_falls_back_to_exact_projection_off_manifold():
    c = SpecialOrthogonal(10, tangent_mode="auto")
    x = near("so10", n=8, scale=3e-2)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    generic = Constraint.tangent(c, x, v)
    auto = c.tangent(x, v)
    assert float((auto - generic).abs().max()) < 1e-5
    # the closed form alone is off by O(‖R Rᵀ − I‖) here, which the fallback avoids
    assert float((c.tangent_on_manifold(x, v) - generic).abs().max()) > 1e-3
    assert float(torch.einsum("bkd,bd->bk", c.h_jac(x), auto).abs().max()) < 1e-9
    mixed = torch.cat([prior("so10", 2), x[:2]])  # per-sample choice in one batch
    vm = torch.cat([v[:2], v[2:4]])
    assert float((c.tangent(mixed, vm) - Constraint.tangent(c, mixed, vm)).abs().max()) < 1e-5


# ----- landing and projection -----------------------------------------------
@pytest.mark.parametrize("name", EQUALITY_ONLY + ["dipeptide", "robot_arm", "simplex"])
def test_implicit_landing_reduces_equality_residual_tenfold(name):
    c = build(name)
    x = near(name, n=6, scale=1e-2 if name != "robot_arm" else 3e-3)
    h0 = c.h(x).abs().amax(dim=1)
    assert float(h0.min()) > 1e-5  # really off Σ
    h1 = c.h(c.land_implicit(x, torch.zeros_like(x))).abs().amax(dim=1)
    assert bool((h1 <= 0.1 * h0).all()), (h0, h1)


@pytest.mark.parametrize("name", ["box", "ball", "polytope", "simplex", "dipeptide"])
def test_projection_pushes_outside_points_inside(name):
    c = build(name)
    gen = torch.Generator().manual_seed(11)
    x = prior(name, n=6)
    if name == "dipeptide":  # move ψ 40° out of the window
        out = rotate_psi(x, 40.0)
    else:
        d = torch.randn(x.shape, generator=gen, dtype=F64)
        out = x + (0.6 if name == "polytope" else 2.0) * d / d.norm(dim=1, keepdim=True)
        n_viol = (c.g(out) > 0).sum(dim=1)
        # at most dim violated rows: more rows than dimensions (a far polytope corner) give the
        # projection an inconsistent ε-shifted target system; see test_far_polytope_failure_is_reported
        out = out[(n_viol > 0) & (n_viol <= c.dim)]
    assert out.shape[0] >= 3 and bool((c.g(out) > 1e-3).any(dim=1).all())
    proj = c.project(out, tol=1e-8)
    assert bool(proj.converged.all())
    assert float(c.violation(proj.x).max()) < 1e-7
    g = c.g(proj.x)
    # rows that were violated land at g = −eps (strictly inside), so no row is active there
    assert float(g.max()) <= -c.eps + 1e-7
    assert not bool(c.active_set(proj.x).any())
    c_eps, J, active = c.stacked(proj.x)
    assert not bool(active.any()) and float(J[:, c.n_eq:].abs().max()) == 0.0
    assert float(c_eps[:, c.n_eq:].abs().max()) == 0.0


@pytest.mark.parametrize("name", ["box", "ball", "polytope"])
def test_interior_points_are_free(name):
    c = build(name)
    x = 0.3 * prior(name, n=8)  # well inside (all these sets are star-shaped about 0)
    assert bool((c.g(x) < 0).all()) and not bool(c.active_set(x).any())
    proj = c.project(x)
    assert bool(proj.converged.all()) and torch.equal(proj.x, x) and int(proj.iterations.max()) == 0
    v = torch.randn(x.shape, dtype=F64)
    assert torch.allclose(c.tangent(x, v), v, atol=1e-12)  # no active row: P = I
    assert torch.allclose(c.normal_step(x), torch.zeros_like(x))


def test_far_polytope_failure_is_reported_not_silent():
    """More violated rows than dimensions: the Newton projection does not converge in general
    (every violated row enters the active set and must reach g = −eps, an overdetermined system).
    The base class must then flag the sample and keep the input point."""
    c = build("polytope")
    x = torch.tensor([[0.0, -2.9, -2.5], [1.2, -1.5, -1.5]], dtype=F64) * 1.2
    assert bool(((c.g(x) > 0).sum(dim=1) > c.dim).all())
    proj = c.project(x, tol=1e-8)
    ok = proj.converged
    assert bool((c.violation(proj.x[ok]) < 1e-7).all())  # converged ones are feasible
    assert torch.equal(proj.x[~ok], x[~ok])  # failures keep the input, reported in `converged`


def test_ball_jacobian_is_finite_at_the_centre():
    c = Ball(3)
    x = torch.zeros(2, 3, dtype=F64)
    assert torch.isfinite(c.g_jac(x)).all()
    proj = c.project(x)
    assert bool(proj.converged.all()) and torch.equal(proj.x, x)


# ----- shipped data ---------------------------------------------------------
@pytest.mark.skipif(not DIPEPTIDE_DATA.exists(), reason=f"shared data absent: {DIPEPTIDE_DATA} (set CDCORE_SHARED)")
def test_shipped_dipeptide_data_is_feasible():
    X = np.load(DIPEPTIDE_DATA)
    assert X.shape == (6029, 10, 3)
    c = Dipeptide()
    x = torch.from_numpy(X.reshape(-1, 30)).to(F64)
    h, g = c.h(x), c.g(x)
    max_h, max_g = float(h.abs().max()), float(g.max())
    psi = torch.rad2deg(c.psi(x))
    print(f"\ndipeptide data: max |h| = {max_h:.3e} rad ({math.degrees(max_h):.2e} deg), "
          f"max g = {max_g:.3e} rad, psi in [{float(psi.min()):.4f}, {float(psi.max()):.4f}] deg")
    assert max_h < 2e-5  # φ = −70° to about 1e-3 degrees
    assert max_g < 0.0  # ψ strictly inside [130°, 170°]
    assert float(c.violation(x).max()) < 2e-5
    # 0-based indices are the right ones: shifting them by one gives φ all over the circle
    phi_1based = _np_dihedral(*[X[:, i - 1] for i in (1, 3, 4, 6)])
    assert np.abs(np.degrees(phi_1based) + 70).max() > 90


@pytest.mark.skipif(not ROBOT_DATA.exists(), reason=f"shared data absent: {ROBOT_DATA} (set CDCORE_SHARED)")
def test_shipped_robot_data_is_feasible():
    X = np.load(ROBOT_DATA)
    assert X.shape == (400, 10, 14)
    c = RobotArm()
    x = torch.from_numpy(X.reshape(-1, 140).astype(np.float64))
    h, g = c.h(x), c.g(x)
    max_h, max_g = float(h.abs().max()), float(g.max())
    blocks = {"ee_z": h[:, :10], "unit_circle": h[:, 10:80], "start": h[:, 80:83], "goal": h[:, 83:86]}
    parts = ", ".join(f"{k} {float(v.abs().max()):.2e}" for k, v in blocks.items())
    ref = torch.from_numpy(np.load(ROBOT_REF).reshape(1, 140).astype(np.float64))
    print(f"\nrobot data: max |h| = {max_h:.3e} m ({parts}); max g = {max_g:.4f} m "
          f"(min link-obstacle distance {0.1 - max_g:.4f} m); ref path max |h| = {float(c.h(ref).abs().max()):.2e}, "
          f"max g = {float(c.g(ref).max()):.4f}")
    assert max_h < 1.5e-3
    assert float(blocks["unit_circle"].abs().max()) < 1e-6
    assert float(blocks["start"].abs().max()) < 1e-4 and float(blocks["goal"].abs().max()) < 1e-4
    assert max_g < -0.01
    assert float(c.violation(ref).max()) < 1.5e-3
    # the flange offset is part of the convention: without it the height is off by 0.107 m
    assert float(RobotArm(flange=0.0).h(x)[:, :10].abs().max()) > 0.1


def test_robot_jacobian_is_block_diagonal_by_waypoint_and_block_solves_equal_the_dense_ones():
    """The robot declares one row block per waypoint; a row outside its block's columns would make every
    per-block Gram solve silently wrong, so the full Jacobian (all obstacle rows active) is checked against
    the declared blocks, and landing, tangent and Newton projection against the dense solve."""
    from cdcore.constraints.base import RowBlocks

    c, dense = RobotArm(), RobotArm()
    dense.row_blocks = lambda: None
    x = c.sample_prior(16, generator=torch.Generator().manual_seed(0)).to(F64)
    x = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    _, J, _ = c.stacked(x, torch.ones(16, c.n_ineq, dtype=torch.bool))
    blocks = c.row_blocks()
    inside = torch.zeros(c.n_rows, c.dim, dtype=torch.bool)
    for k, (rows, valid) in enumerate(zip(blocks.index, blocks.valid)):
        inside[rows[valid > 0].unsqueeze(1), torch.arange(14 * k, 14 * k + 14)] = True
    assert float(J[:, ~inside].abs().max()) == 0.0
    assert float(J[:, inside].abs().max()) > 0.1
    for active in (torch.zeros(16, c.n_ineq, dtype=torch.bool), c.g(x) > -0.05):
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
        gb, gd = c.geometry(x, active), dense.geometry(x, active)
        assert torch.allclose(c.tangent(x, v, gb), dense.tangent(x, v, gd), atol=1e-9)
        assert torch.allclose(c.normal_step(x, gb), dense.normal_step(x, gd), atol=1e-9)
    y = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    pb, pd = c.project(x, c.tangent(x, y), tol=1e-9), dense.project(x, dense.tangent(x, y), tol=1e-9)
    assert bool(pb.converged.all()) and torch.equal(pb.converged, pd.converged)
    assert torch.allclose(pb.x, pd.x, atol=1e-8)
    with pytest.raises(ValueError, match="cover every constraint row"):
        RowBlocks.from_rows([[0, 1], [3]], 4)


def test_son_normal_step_matches_the_generic_gram_step():
    """The Lyapunov normal step equals −Jᵀ G⁻¹ c of the base class off the manifold."""
    from cdcore.constraints.base import Constraint
    from cdcore.constraints.son import SpecialOrthogonal

    c = SpecialOrthogonal(4, delta=1e-12)
    R = c.sample_prior(16).double()
    x = R + 1e-2 * torch.randn_like(R, dtype=torch.float64)
    fast = c.normal_step(x)
    generic = Constraint.normal_step(c, x, c.geometry(x))
    assert torch.allclose(fast, generic, atol=1e-9)
    # and it lands: one step reduces the residual quadratically
    assert c.h(x + fast).abs().max() < 0.05 * c.h(x).abs().max()


def test_son_gram_tangent_is_exact_without_host_reads():
    """The default (analytic-Gram) projection matches the generic one, on and off SO(n), with no host reads."""
    from torch.profiler import ProfilerActivity, profile

    c = SpecialOrthogonal(10)
    x = near("so10", n=8, scale=3e-2)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        it = c.tangent(x, v)
    assert "aten::_local_scalar_dense" not in [e.name for e in prof.events()]
    assert float((it - Constraint.tangent(c, x, v)).abs().max()) < 1e-8
    assert float(torch.einsum("bkd,bd->bk", c.h_jac(x), it).abs().max()) < 1e-5  # O(δ) from the Gram shift


def test_son_manifold_mode_landing_normal_is_the_gauss_newton_step_on_son_and_contracts_off_it():
    """The closed-form landing normal −½(R Rᵀ − I)R of ``tangent_mode="manifold"`` equals the exact Gauss–Newton
    step to first order (error O(residual²)), and one landing step from a residual of ~0.06 contracts it
    quadratically, as the exact step does."""
    exact, closed = SpecialOrthogonal(10), SpecialOrthogonal(10, tangent_mode="manifold")
    for scale in (1e-2, 1e-3):
        x = near("so10", n=8, scale=scale)
        res = float(exact.h(x).abs().max())
        diff = float((closed.normal_step(x) - exact.normal_step(x)).abs().max())
        assert diff < 10 * res**2, (scale, res, diff)
        assert diff > 0 or res == 0
    x = near("so10", n=8, scale=1e-2)
    r0 = float(exact.h(x).abs().max())
    for c in (exact, closed):
        r1 = float(c.h(x + c.normal_step(x)).abs().max())
        assert r1 < 2 * r0**2 < 0.2 * r0, (c.tangent_mode, r0, r1)


def test_son_polish_reaches_the_nearest_rotation_where_the_closed_form_landing_step_diverges():
    """Singular values from 0.5 to 3: Newton–Schulz unscaled (the manifold-mode landing step) blows up; the
    scaled iteration of ``polish`` lands on U Vᵀ, the nearest rotation, to 1e-10 in ten steps."""
    c = SpecialOrthogonal(4, tangent_mode="manifold")
    g = torch.Generator().manual_seed(0)
    U = c.sample_prior(8, generator=g).double().reshape(-1, 4, 4)
    V = c.sample_prior(8, generator=g).double().reshape(-1, 4, 4)
    s = torch.linspace(0.5, 3.0, 4, dtype=torch.float64)
    x = (U @ torch.diag(s) @ V.transpose(1, 2)).reshape(8, 16)
    ns, z = x.clone(), x.clone()
    for _ in range(10):
        ns = c.land_implicit(ns, torch.zeros_like(ns))
        z = c.polish(z)
    assert not bool((c.violation(ns) < 1e-3).all())
    assert float(c.violation(z).max()) < 1e-10
    assert torch.allclose(z.reshape(-1, 4, 4), U @ V.transpose(1, 2), atol=1e-6)  # U, V: float32 rotations
    w = z + 1e-3 * torch.randn(z.shape, generator=g, dtype=z.dtype)  # near SO(n) it is the landing step
    assert torch.allclose(c.polish(w), c.land_implicit(w, torch.zeros_like(w)), atol=1e-12)


def test_so10_benchmarks_and_their_pipeline_data_use_the_closed_form_geometry(tmp_path):
    """The SO(10) benchmarks' constraint arguments reach every pipeline stage through the data file's attributes
    (so do the convex benchmarks' dimensions, which the pipeline once dropped)."""
    from cdcore import benchmarks
    from cdcore.config import parse_params
    from flows import stages
    import yaml

    from tests.conftest import REPO

    assert benchmarks.get("so10_3w").make_constraint().tangent_mode == "manifold"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["finetune"] = {}
    raw["datasets"] = {"rot": {"kind": "benchmark", "benchmark": "so10_3w"},
                       "ball": {"kind": "benchmark", "benchmark": "ball_gmm"},
                       "poly": {"kind": "benchmark", "benchmark": "polytope_gmm"}}
    p = parse_params(raw)
    from cdcore.data import io

    _, attrs = io.read_dataset(stages.run_data(p, "rot", tmp_path))
    assert attrs["constraint_kwargs"] == {"tangent_mode": "manifold"}
    assert stages.constraint_of(attrs).tangent_mode == "manifold"
    _, attrs = io.read_dataset(stages.run_data(p, "ball", tmp_path))
    assert stages.constraint_of(attrs).dim == 2 == attrs["dim"]
    assert stages.constraint_of(attrs).eps == 0.02  # the wall shift the benchmark chose, not the class default
    _, attrs = io.read_dataset(stages.run_data(p, "poly", tmp_path))
    poly, ref = stages.constraint_of(attrs), benchmarks.get("polytope_gmm").make_constraint()
    assert torch.equal(poly.A, ref.A) and torch.equal(poly.b, ref.b) and poly.eps == ref.eps
