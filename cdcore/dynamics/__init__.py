"""Samplers and forward simulations as plain functions of one shape (k-diffusion style): a network callable,
the prior points (the caller draws them), the schedule, the options and a per-step callback in, one
:class:`SampleResult` (samples, dropped trajectories, network calls, Newton iterations) out.

``landing``: the constrained noising and denoising loops of landing diffusion (landing.md §1.3–1.6), with
landing, Newton projection, rejection or no constraint handling. ``unconstrained``: the reverse VP-SDE and
ancestral DDPM loops that NAMM (in mirror space) and dual training sample with. ``schedules``: σ(t), the
VP-SDE, the DDPM coefficients.
"""

from cdcore.dynamics.landing import (
    DynamicsConfig,
    DynamicsKind,
    Handling,
    check_landing_stability,
    constrain,
    forward_paths,
    land_to_tolerance,
    landing_rates,
    sample,
    step_active,
)
from cdcore.dynamics.result import Callback, PathResult, SampleResult, ScoreFn
from cdcore.dynamics.schedules import VPSDE, DDPMCoefficients, NoiseSchedule
from cdcore.dynamics.unconstrained import ddpm_ancestral, vp_reverse_sde

__all__ = ["DynamicsConfig", "DynamicsKind", "Handling", "check_landing_stability", "constrain", "forward_paths",
           "land_to_tolerance", "landing_rates", "sample", "step_active", "Callback", "PathResult", "SampleResult",
           "ScoreFn", "VPSDE", "DDPMCoefficients", "NoiseSchedule", "ddpm_ancestral", "vp_reverse_sde"]
