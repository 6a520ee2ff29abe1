"""Landing diffusion (landing.md): diffusion on {h = 0, g ≤ 0} whose iterates a landing term pulls back to
the set instead of projecting them.

``loss`` the path negative log-likelihood, ``train`` the resumable training loop, ``sample`` the samplers
(OLLA/ULLA and their projection baselines), ``io`` the schedule, dynamics and network built from
configuration. The loops themselves are in :mod:`cdcore.dynamics`.
"""

from cdcore.methods.errors import DivergenceError
from cdcore.methods.landing.io import build_model, dynamics_from, schedule_from
from cdcore.methods.landing.loss import (full_path_loss, overdamped_step_loss, path_loss_terms,
                                         underdamped_step_loss)
from cdcore.methods.landing.sample import (Precision, PriorFn, at_precision, forward_end_prior, sample_landing,
                                           sample_quality_selector)
from cdcore.methods.landing.train import SelectFn, TrainOutcome, train_landing

__all__ = ["DivergenceError", "build_model", "dynamics_from", "schedule_from", "full_path_loss",
           "overdamped_step_loss", "path_loss_terms", "underdamped_step_loss", "Precision", "PriorFn",
           "at_precision", "forward_end_prior", "sample_landing", "sample_quality_selector", "SelectFn",
           "TrainOutcome", "train_landing"]
