"""7-DOF Franka Emika Panda trajectories with end-effector and obstacle constraints.

x ∈ R^140 = T = 10 waypoints × 14, each waypoint laid out as
(cos q1, …, cos q7, sin q1, …, sin q7) (the layout of the shipped data,
``shared/data/robot_arm/robot_7dof_joints_paths.npy``).

Forward kinematics: the Panda's modified (Craig) DH table,
T_i = RotX(α_{i−1}) · TransX(a_{i−1}) · RotZ(q_i) · TransZ(d_i), with
a = [0, 0, 0, 0.0825, −0.0825, 0, 0.088], d = [0.333, 0, 0.316, 0, 0.384, 0, 0],
α = [0, −π/2, π/2, π/2, −π/2, π/2, π/2] and a flange TransZ(0.107) after joint 7
(end effector = flange origin; no hand offset). cos q / sin q enter RotZ directly,
no atan2: off the circle c² + s² = 1 the FK is that of a scaled rotation, which is
smooth, and the joint rows c² + s² − 1 pull the pair back onto the circle.
Link positions are the origins of frames 1..7 (as in the landing code); frames 1
and 2 share the fixed point (0, 0, 0.333), so their obstacle rows are constant
(zero gradient) and never active for the default obstacles (0.52 m away), and
frames 5 and 6 coincide (T₆ has a = d = 0), so their rows are identical: when active
they make the Gram matrix rank-deficient (δ regularises it). ``links=(3, 4, 5, 7)``
keeps one row per distinct moving point (80 instead of 140 rows).

Equalities (vector h, one row per scalar condition, 86 rows for T = 10):
  [ee_z(t) − 0.205 for t < T] (T), [c_tj² + s_tj² − 1] (7T, waypoint-major),
  ee(0) − start (3), ee(T−1) − goal (3).
Inequalities (K·L·T rows for K obstacles and L links, waypoint-major, then link, then obstacle):
  clearance − ‖p_link(t) − o‖ ≤ 0, clearance = 0.1 m.
Checked against the shipped data: max |h| ≈ 1.0e-3 (an ee height residual; the
data were made with a sum-of-squares h) and max g ≈ −0.018 (closest link 0.118 m
from an obstacle centre).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from cdcore.constraints.base import Constraint, Parts, RowBlocks

PANDA_A = (0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088)
PANDA_D = (0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0)
PANDA_ALPHA = (0.0, -math.pi / 2, math.pi / 2, math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 2)
PANDA_FLANGE = 0.107

# A feasible path (cos q1..q7, sin q1..q7 per waypoint), copied from
# shared/data/robot_arm/robot_7dof_joints_ref.npy so that the prior needs no data file.
REFERENCE_PATH = (
    (7.3595190e-01, -5.1412487e-01, 9.6056527e-01, 5.9981412e-01, 9.6702510e-01, 3.5084730e-01, 9.8042142e-01,
     -6.7703384e-01, 8.5771537e-01, 2.7805465e-01, 8.0013937e-01, -2.5468111e-01, 9.3643266e-01, -1.9691058e-01),
    (6.6840929e-01, -1.4264321e-01, 9.7105980e-01, 9.7803169e-01, 9.7155041e-01, 6.0842182e-02, 9.9467647e-01,
     -7.4379367e-01, 9.8977417e-01, 2.3883638e-01, 2.0845613e-01, -2.3683283e-01, 9.9814743e-01, -1.0304692e-01),
    (8.4955537e-01, -3.6006853e-01, 9.8035055e-01, 8.1715566e-01, 9.8193121e-01, 2.3295425e-01, 9.9367261e-01,
     -5.2749944e-01, 9.3292588e-01, 1.9726318e-01, 5.7641703e-01, -1.8923829e-01, 9.7248769e-01, 1.1231537e-01),
    (9.2655337e-01, -5.1636702e-01, 9.8337603e-01, 6.0946655e-01, 9.8609287e-01, 3.5294163e-01, 9.7007149e-01,
     -3.7616330e-01, 8.5636741e-01, 1.8158084e-01, 7.9281175e-01, -1.6619536e-01, 9.3564534e-01, 2.4281955e-01),
    (9.9665475e-01, -7.6440722e-01, 9.8629326e-01, 1.3101234e-01, 9.9209666e-01, 5.3027034e-01, 8.7302607e-01,
     -8.1726976e-02, 6.4473379e-01, 1.6500181e-01, 9.9138075e-01, -1.2547617e-01, 8.4782863e-01, 4.8767355e-01),
    (9.9111420e-01, -9.4428176e-01, 9.8108315e-01, -3.3977243e-01, 9.9666637e-01, 6.2454402e-01, 7.7535766e-01,
     1.3301364e-01, 3.2913813e-01, 1.9358669e-01, 9.4050771e-01, -8.1584908e-02, 7.8098959e-01, 6.3152236e-01),
    (8.4149140e-01, -9.8386806e-01, 9.9595159e-01, -4.7677240e-01, 9.9978751e-01, 6.2570047e-01, 3.1087074e-01,
     5.4027051e-01, 1.7889561e-01, 8.9891188e-02, 8.7902677e-01, -2.0615300e-02, 7.8006339e-01, 9.5045221e-01),
    (6.4053804e-01, -8.6619377e-01, 9.9999988e-01, -1.1055425e-01, 9.9999994e-01, 5.9240842e-01, -9.0640828e-02,
     7.6792645e-01, 4.9970829e-01, -4.5876412e-04, 9.9387008e-01, 2.8455534e-04, 8.0563784e-01, 9.9588364e-01),
    (4.6702695e-01, -8.2036346e-01, 9.9937350e-01, 6.4842999e-03, 9.9969852e-01, 5.6615466e-01, -3.3576939e-01,
     8.8424307e-01, 5.7184249e-01, -3.5392880e-02, 9.9997896e-01, 2.4553191e-02, 8.2429904e-01, 9.4194424e-01),
    (6.2628126e-01, -5.2930009e-01, 9.9999309e-01, 5.9844750e-01, 9.9999428e-01, 3.6296919e-01, -1.1158750e-01,
     7.7959716e-01, 8.4843469e-01, -3.7173363e-03, 8.0116206e-01, 3.3847531e-03, 9.3180114e-01, 9.9375463e-01),
)


@functools.lru_cache(maxsize=16)
def _dh_constants(dtype: torch.dtype, device: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """Per-joint t_k and RotX(α_k), built once per dtype and device (the chain runs several times a step)."""
    ts, rxs = [], []
    for i in range(7):
        ca, sa = math.cos(PANDA_ALPHA[i]), math.sin(PANDA_ALPHA[i])
        ca = 0.0 if abs(ca) < 1e-12 else ca
        sa = 0.0 if abs(sa) < 1e-12 else sa
        ts.append(torch.tensor([PANDA_A[i], -PANDA_D[i] * sa, PANDA_D[i] * ca], dtype=dtype, device=device))
        rxs.append(torch.tensor([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]], dtype=dtype, device=device))
    return ts, rxs


def _panda_chain(cos_q: Tensor, sin_q: Tensor, flange: float, with_jacobian: bool):
    """Forward pass (and optionally the analytic Jacobian) of the modified-DH chain.

    Frame k has rotation R_k = M_k Rz(c_k, s_k), M_k = R_{k−1} RotX(α_k), and origin
    p_k = p_{k−1} + R_{k−1} t_k with t_k = (a_k, −d_k sin α_k, d_k cos α_k). Rz is linear
    in (c_k, s_k), so every later point p_j = p_k + M_k Rz(c_k, s_k) v_{k,j} is linear in
    (c_k, s_k) with ∂p_j/∂c_k = M_k E_c v_{k,j}, ∂p_j/∂s_k = M_k E_s v_{k,j}
    (E_c v = (v_x, v_y, 0), E_s v = (−v_y, v_x, 0)). The frame-k vectors v_{k,j} come from
    the backward recursion v_{k,j} = t_{k+1} + RotX(α_{k+1}) Rz_{k+1} v_{k+1,j}.
    """
    shape = cos_q.shape[:-1]
    dt, dev = cos_q.dtype, cos_q.device
    ts, rxs = _dh_constants(dt, dev)
    R = torch.eye(3, dtype=dt, device=dev).expand(*shape, 3, 3)
    p = cos_q.new_zeros(*shape, 3)
    links, Ms = [], []
    for i in range(7):
        p = p + R @ ts[i]
        M = R @ rxs[i]
        c, s = cos_q[..., i : i + 1], sin_q[..., i : i + 1]
        R = torch.stack([c * M[..., 0] + s * M[..., 1], c * M[..., 1] - s * M[..., 0], M[..., 2]], dim=-1)
        links.append(p)
        Ms.append(M)
    ee = p + flange * R[..., 2]
    points = torch.stack(links + [ee], dim=-2)  # (..., 8, 3): frames 1..7, flange
    if not with_jacobian:
        return points, None
    # backward recursion over k = 7..1 for all 8 targets at once (targets j <= k give 0)
    idx = torch.arange(8, device=dev)
    V = cos_q.new_zeros(*shape, 8, 3)
    V[..., 7, 2] = flange  # v_{7, ee} = (0, 0, flange)
    cols_c, cols_s = [None] * 7, [None] * 7
    for k in range(6, -1, -1):  # 0-based joint k (frame k + 1)
        if k < 6:
            c, s = cos_q[..., k + 1 : k + 2, None], sin_q[..., k + 1 : k + 2, None]
            vx, vy, vz = V[..., 0:1], V[..., 1:2], V[..., 2:3]
            rz = torch.cat([c * vx - s * vy, s * vx + c * vy, vz], dim=-1)
            V = ts[k + 1] + rz @ rxs[k + 1].T
            V = V * (idx > k).to(dt).unsqueeze(-1)
        ec = torch.cat([V[..., 0:2], torch.zeros_like(V[..., 2:3])], dim=-1)
        es = torch.cat([-V[..., 1:2], V[..., 0:1], torch.zeros_like(V[..., 2:3])], dim=-1)
        Mk = Ms[k].unsqueeze(-3)
        cols_c[k] = (Mk @ ec.unsqueeze(-1)).squeeze(-1)  # (..., 8, 3)
        cols_s[k] = (Mk @ es.unsqueeze(-1)).squeeze(-1)
    jac = torch.stack(cols_c + cols_s, dim=-1)  # (..., 8, 3, 14): ∂point/∂(c_1..c_7, s_1..s_7)
    return points, jac


def panda_fk(cos_q: Tensor, sin_q: Tensor, flange: float = PANDA_FLANGE) -> tuple[Tensor, Tensor]:
    """Modified-DH Panda FK from (cos q, sin q), both (..., 7).

    Returns the origins of frames 1..7, shape (..., 7, 3), and the flange (end
    effector) position (..., 3), in metres. Pure tensor ops (vmap/jacrev safe):
    T_i's rotation is RotX(α) RotZ(q) and its translation (a, −d sin α, d cos α).
    """
    points, _ = _panda_chain(cos_q, sin_q, flange, with_jacobian=False)
    return points[..., :7, :], points[..., 7, :]


def panda_fk_jacobian(cos_q: Tensor, sin_q: Tensor, flange: float = PANDA_FLANGE) -> tuple[Tensor, Tensor]:
    """Points (..., 8, 3) (frames 1..7, flange) and their analytic Jacobian (..., 8, 3, 14)
    with respect to (cos q1..q7, sin q1..q7)."""
    return _panda_chain(cos_q, sin_q, flange, with_jacobian=True)


def _block_diag(local: Tensor) -> Tensor:
    """(B, T, r, 14) per-waypoint rows -> (B, T·r, T·14) block-diagonal Jacobian."""
    B, T, r, w = local.shape
    eye = torch.eye(T, dtype=local.dtype, device=local.device)
    return (local.unsqueeze(3) * eye.view(1, T, 1, T, 1)).reshape(B, T * r, T * w)


class RobotArm(Constraint):
    """Panda trajectories: vector equality h (86 rows) and per-link obstacle clearances."""

    name = "robot_arm"

    def __init__(
        self,
        waypoints: int = 10,
        target_z: float = 0.205,
        start: Sequence[float] = (0.4, -0.5, 0.205),
        goal: Sequence[float] = (0.4, 0.5, 0.205),
        obstacles: Sequence[Sequence[float]] = ((0.4, -0.3, 0.205), (0.4, 0.3, 0.205)),
        clearance: float = 0.1,
        links: Sequence[int] = (1, 2, 3, 4, 5, 6, 7),
        flange: float = PANDA_FLANGE,
        eps: float = 0.001,
        cutoff: float = 0.0,
        delta: float = 1e-6,
    ) -> None:
        if waypoints < 2:
            raise ValueError(f"need at least 2 waypoints, got {waypoints}")
        self.T = waypoints
        self.target_z, self.clearance, self.flange = float(target_z), float(clearance), float(flange)
        self.start = tuple(float(v) for v in start)
        self.goal = tuple(float(v) for v in goal)
        self.obstacles = tuple(tuple(float(v) for v in o) for o in obstacles)
        self.links = tuple(int(i) for i in links)
        if not self.links or any(not 1 <= i <= 7 for i in self.links):
            raise ValueError(f"links must be frame numbers in 1..7, got {links}")
        n_eq = waypoints + 7 * waypoints + 6
        n_ineq = len(self.links) * waypoints * len(self.obstacles)
        super().__init__(14 * waypoints, n_eq=n_eq, n_ineq=n_ineq, eps=eps, cutoff=cutoff, delta=delta)

    def _cs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = x.reshape(x.shape[0], self.T, 14)
        return w[..., :7], w[..., 7:]

    def fk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Link origins (B, T, 7, 3) and end-effector positions (B, T, 3)."""
        c, s = self._cs(x)
        return panda_fk(c, s, self.flange)

    def h(self, x: Tensor) -> Tensor:
        c, s = self._cs(x)
        _, ee = panda_fk(c, s, self.flange)
        return self._h_of(x, c, s, ee)

    def _h_of(self, x: Tensor, c: Tensor, s: Tensor, ee: Tensor) -> Tensor:
        start = torch.tensor(self.start, dtype=x.dtype, device=x.device)
        goal = torch.tensor(self.goal, dtype=x.dtype, device=x.device)
        return torch.cat(
            [
                ee[..., 2] - self.target_z,
                (c * c + s * s - 1.0).reshape(x.shape[0], 7 * self.T),
                ee[:, 0] - start,
                ee[:, -1] - goal,
            ],
            dim=1,
        )

    def g(self, x: Tensor) -> Tensor:
        links, _ = self.fk(x)
        return self._g_of(x, links)

    def _g_of(self, x: Tensor, links: Tensor) -> Tensor:
        links = links[:, :, [i - 1 for i in self.links]]
        obs = torch.tensor(self.obstacles, dtype=x.dtype, device=x.device)  # (K, 3)
        dist = (links.unsqueeze(-2) - obs).norm(dim=-1)  # (B, T, L, K)
        return (self.clearance - dist).reshape(x.shape[0], self.n_ineq)

    # analytic Jacobians: per-waypoint FK derivatives placed block-diagonally
    def h_jac(self, x: Tensor) -> Tensor:
        c, s = self._cs(x)
        _, Jp = panda_fk_jacobian(c, s, self.flange)  # (B, T, 8, 3, 14)
        return self._h_jac_of(x, c, s, Jp)

    def _h_jac_of(self, x: Tensor, c: Tensor, s: Tensor, Jp: Tensor) -> Tensor:
        B, T = x.shape[0], self.T
        Jee = Jp[:, :, 7]  # (B, T, 3, 14)
        z_rows = _block_diag(Jee[:, :, 2:3])  # (B, T, 140)
        joint = torch.cat([torch.diag_embed(2 * c), torch.diag_embed(2 * s)], dim=-1)  # (B, T, 7, 14)
        joint_rows = _block_diag(joint)
        first = torch.cat([Jee[:, 0], x.new_zeros(B, 3, 14 * (T - 1))], dim=2)
        last = torch.cat([x.new_zeros(B, 3, 14 * (T - 1)), Jee[:, -1]], dim=2)
        return torch.cat([z_rows, joint_rows, first, last], dim=1)

    def g_jac(self, x: Tensor) -> Tensor:
        c, s = self._cs(x)
        P, Jp = panda_fk_jacobian(c, s, self.flange)
        return self._g_jac_of(x, P, Jp)

    def _g_jac_of(self, x: Tensor, P: Tensor, Jp: Tensor) -> Tensor:
        B, T, K = x.shape[0], self.T, len(self.obstacles)
        obs = torch.tensor(self.obstacles, dtype=x.dtype, device=x.device)
        sel = [i - 1 for i in self.links]
        diff = P[:, :, sel].unsqueeze(-2) - obs  # (B, T, L, K, 3)
        unit = diff / diff.norm(dim=-1, keepdim=True)
        rows = -torch.einsum("btlki,btliw->btlkw", unit, Jp[:, :, sel])  # (B, T, L, K, 14)
        return _block_diag(rows.reshape(B, T, len(sel) * K, 14))

    def parts(self, x: Tensor) -> Parts:
        """h, g and both Jacobians from one FK pass (the generic path runs the chain four times)."""
        c, s = self._cs(x)
        P, Jp = panda_fk_jacobian(c, s, self.flange)
        return ((self._h_of(x, c, s, P[..., 7, :]), self._h_jac_of(x, c, s, Jp)),
                (self._g_of(x, P[..., :7, :]), self._g_jac_of(x, P, Jp)))

    def row_blocks(self) -> RowBlocks:
        """Every row reads one waypoint (the start rows waypoint 0, the goal rows the last): one block of
        up to 25 rows and 14 columns per waypoint instead of one 226-row Gram."""
        T, per = self.T, len(self.links) * len(self.obstacles)
        rows = []
        for t in range(T):
            b = [t] + [T + 7 * t + j for j in range(7)]
            b += [8 * T + i for i in range(3)] if t == 0 else []
            b += [8 * T + 3 + i for i in range(3)] if t == T - 1 else []
            b += [self.n_eq + t * per + i for i in range(per)]
            rows.append(b)
        return RowBlocks.from_rows(rows, self.n_rows)

    def sample_prior(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device=None,
        noise: float = 0.05,
        max_rounds: int = 20,
    ) -> Tensor:
        """The reference path with Gaussian joint-angle noise (``noise`` rad), Newton-projected
        onto Σ; non-converged samples are redrawn. The landing paper uses a generated prior."""
        ref = torch.tensor(REFERENCE_PATH, dtype=torch.float64, device=device)
        if self.T != ref.shape[0]:
            raise NotImplementedError(f"the reference path has {ref.shape[0]} waypoints, not {self.T}")
        q = torch.atan2(ref[:, 7:], ref[:, :7])

        def propose(k: int) -> Tensor:
            qk = q + noise * torch.randn(k, self.T, 7, generator=generator, device=device, dtype=torch.float64)
            return torch.cat([torch.cos(qk), torch.sin(qk)], dim=-1).reshape(k, self.dim)

        x = self.projected_draws(propose, n, max_rounds=max_rounds)
        return x.to(torch.get_default_dtype())

    def spec(self) -> dict:
        return {
            **super().spec(),
            "waypoints": self.T,
            "target_z": self.target_z,
            "start": list(self.start),
            "goal": list(self.goal),
            "obstacles": [list(o) for o in self.obstacles],
            "clearance": self.clearance,
            "links": list(self.links),
            "flange": self.flange,
            "layout": "waypoint-major; per waypoint cos q1..q7 then sin q1..q7",
            "fk": "Panda modified DH, links = frame origins 1..7, ee = flange",
        }
