"""The one error every method raises when training or sampling diverges (NaN/Inf losses or samples).

The pipeline treats it as deterministic: a diverged run is never retried, and the CLI prints its message
(which says where it happened and what was kept) without a traceback.
"""


class DivergenceError(RuntimeError):
    """Training or sampling produced NaN/Inf; the message says where and what was kept."""


EXPLOSION = 1e4  # a logged loss this many times the first one (or 1, if larger) is divergence, not noise


def check_loss(loss: float, first: float | None, step: int, fix: str) -> None:
    """Divergence means more than NaN: a loss that exploded without overflowing (1.9e35 at ``lr: 1``) also stops
    training, so that a diverged model is never saved, evaluated or registered."""
    import math

    if not math.isfinite(loss) or (first is not None and abs(loss) > EXPLOSION * max(1.0, abs(first))):
        start = f" (first logged {first:.4g})" if first is not None else ""
        raise DivergenceError(f"training loss is {loss:.4g} at step {step}{start}: training diverged. {fix}")
