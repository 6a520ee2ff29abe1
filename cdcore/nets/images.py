"""NAMM networks: the ICNN forward (mirror) map g, the residual inverse map f and a small score U-Net.

All nets act on NCHW tensors.

- :class:`ICNN` ψ_φ (conv-ICNN, circular padding) with ``g(x) = (1 − α)∇ψ(x) + αx`` (α = 0.9): the gradient of
  the strongly convex potential ψ + α‖x‖²/2, hence invertible with a symmetric Jacobian ⪰ αI.
  Non-negativity of the z-path and output weights is kept by :meth:`ICNN.clamp_nonneg` after each step.
- :class:`ResnetGenerator` f_ψ: CycleGAN-style residual generator (down/res-blocks/up), optional ``+ input``
  and softplus output.
- :class:`ScoreUNet`: a small two-level U-Net with sinusoidal time embedding for the mirror-space VP-SDE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _circular_conv(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular", bias=bias)


class ICNN(nn.Module):
    """Convolutional input-convex network ψ: (B, C, H, W) -> (B,).

    z_0 = lrelu((Wq_0 x)² + Wl_0 x + b_0),  z_{k+1} = lrelu(Wz_k z_k + (Wq_{k+1} x)² + Wl_{k+1} x + b_{k+1}),
    ψ = Σ_H mean_{W,C} (W_out z_L) with Wz_k, W_out ≥ 0. Convex in x: squares of linear maps and affine maps are
    convex, non-negative combinations and the convex non-decreasing LeakyReLU preserve convexity.
    """

    def __init__(self, channels: int = 1, n_filters: int = 32, n_layers: int = 3, alpha: float = 0.9,
                 slope: float = 0.2, init_scale: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha (strong convexity) must be in (0, 1), got {alpha}")
        self.alpha, self.slope = alpha, slope
        self.wq = nn.ModuleList([_circular_conv(channels, n_filters, bias=False) for _ in range(n_layers + 1)])
        self.wl = nn.ModuleList([_circular_conv(channels, n_filters, bias=True) for _ in range(n_layers + 1)])
        self.wz = nn.ModuleList([_circular_conv(n_filters, n_filters, bias=False) for _ in range(n_layers)])
        self.out = _circular_conv(n_filters, channels, bias=False)
        # Wq, Wl keep PyTorch's default (LeCun-like) init; the non-negative weights start in U[0, init_scale]
        for m in [*self.wz, self.out]:
            nn.init.uniform_(m.weight, 0.0, init_scale)

    def nonneg_parameters(self) -> list[Tensor]:
        return [m.weight for m in [*self.wz, self.out]]

    @torch.no_grad()
    def clamp_nonneg(self) -> None:
        """Clip negative z-path / output weights to 0 (call after every optimiser step)."""
        for w in self.nonneg_parameters():
            w.clamp_(min=0.0)

    def psi(self, x: Tensor) -> Tensor:
        z = F.leaky_relu(self.wq[0](x) ** 2 + self.wl[0](x), self.slope)
        for k, wz in enumerate(self.wz):
            z = F.leaky_relu(wz(z) + self.wq[k + 1](x) ** 2 + self.wl[k + 1](x), self.slope)
        out = self.out(z)  # (B, C, H, W)
        return out.mean(dim=(1, 3)).sum(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.psi(x)

    def grad_psi(self, x: Tensor) -> Tensor:
        """∇ψ per sample (samples are independent), differentiable w.r.t. x and the parameters."""
        return torch.func.grad(lambda z: self.psi(z).sum())(x)

    def g(self, x: Tensor) -> Tensor:
        """The forward mirror map g(x) = (1 − α)∇ψ(x) + αx."""
        return (1.0 - self.alpha) * self.grad_psi(x) + self.alpha * x


def _check_padding(padding: str) -> None:
    if padding not in ("zeros", "circular"):
        raise ValueError(f"padding must be 'zeros' or 'circular', got {padding!r}")


def _upsample2x(cin: int, cout: int, kernel: int, padding: str) -> nn.Module:
    """×2 up-sampling: a stride-2 transposed conv (zero padding), or nearest + circular conv3, since
    ConvTranspose2d has no circular padding."""
    if padding == "zeros":
        return nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=1, output_padding=4 - kernel)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding))


class _ResBlock(nn.Module):
    def __init__(self, ch: int, dropout: float, padding: str = "zeros") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode=padding), nn.InstanceNorm2d(ch), nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode=padding), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The approximate inverse f_ψ (CycleGAN ResNet generator, sizes configurable).

    conv7(nf)-IN-ReLU → n_down × [conv3 s2 (×2 ch)-IN-ReLU] → n_blocks res blocks → n_down × [convT3 s2-IN-ReLU]
    → conv7(C) → (+ input if ``residual``) → (softplus if ``activation == "softplus"``). Init N(0, 0.02).
    Paper: nf 64, n_down 2, n_blocks 6, dropout 0.5.

    ``padding="circular"`` makes f equivariant to translations of the torus (images of a periodic domain): a
    zero-padded f treats border pixels differently from interior ones, so even an exactly periodic input comes out
    non-periodic near the borders. Up-sampling is then nearest-neighbour + circular conv3 (ConvTranspose2d has no
    circular padding).
    """

    def __init__(self, channels: int = 1, nf: int = 64, n_down: int = 2, n_blocks: int = 6, residual: bool = True,
                 activation: str = "softplus", dropout: float = 0.0, padding: str = "zeros") -> None:
        super().__init__()
        if activation not in ("softplus", "none"):
            raise ValueError(f"activation must be 'softplus' or 'none', got {activation!r}")
        _check_padding(padding)
        self.residual, self.activation = residual, activation
        pm = padding
        layers: list[nn.Module] = [nn.Conv2d(channels, nf, 7, padding=3, padding_mode=pm), nn.InstanceNorm2d(nf),
                                   nn.ReLU()]
        ch = nf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, padding_mode=pm), nn.InstanceNorm2d(2 * ch),
                       nn.ReLU()]
            ch *= 2
        layers += [_ResBlock(ch, dropout, pm) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [_upsample2x(ch, ch // 2, 3, pm), nn.InstanceNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.Conv2d(ch, channels, 7, padding=3, padding_mode=pm)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, y: Tensor) -> Tensor:
        out = self.net(y)
        if self.residual:
            out = out + y
        if self.activation == "softplus":
            out = F.softplus(out)
        return out


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of t ∈ [0, 1] (scaled by 1000), shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class _TimeBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int, padding: str = "zeros") -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(min(8, cin), cin), nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding)
        self.t = nn.Linear(tdim, cout)
        self.n2 = nn.GroupNorm(min(8, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, padding_mode=padding)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class ScoreUNet(nn.Module):
    """Small U-Net ε_θ(x_t, t) for the VP-SDE: two resolutions, one time-conditioned block per level.

    ``padding="circular"``: every conv wraps around and up-sampling is nearest + circular conv3, so the net is
    equivariant to even translations of the torus (one stride-2 level), for images of a periodic domain.
    """

    def __init__(self, channels: int = 1, nf: int = 32, tdim: int = 64, padding: str = "zeros") -> None:
        super().__init__()
        _check_padding(padding)
        self.tdim = tdim
        self.temb = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(channels, nf, 3, padding=1, padding_mode=padding)
        self.down1 = _TimeBlock(nf, nf, tdim, padding)
        self.pool = nn.Conv2d(nf, 2 * nf, 3, stride=2, padding=1, padding_mode=padding)
        self.mid = _TimeBlock(2 * nf, 2 * nf, tdim, padding)
        self.up = _upsample2x(2 * nf, nf, 4, padding)
        self.up1 = _TimeBlock(2 * nf, nf, tdim, padding)
        self.outp = nn.Sequential(nn.GroupNorm(min(8, nf), nf), nn.SiLU(),
                                  nn.Conv2d(nf, channels, 3, padding=1, padding_mode=padding))
        nn.init.zeros_(self.outp[-1].weight)
        nn.init.zeros_(self.outp[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.temb(timestep_embedding(t, self.tdim))
        h1 = self.down1(self.inp(x), temb)
        h2 = self.mid(self.pool(h1), temb)
        h = self.up1(torch.cat([self.up(h2), h1], dim=1), temb)
        return self.outp(h)
