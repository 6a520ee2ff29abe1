"""The one error every method raises when training or sampling diverges (NaN/Inf losses or samples).

The pipeline treats it as deterministic: a diverged run is never retried, and the CLI prints its message
(which says where it happened and what was kept) without a traceback.
"""


class DivergenceError(RuntimeError):
    """Training or sampling produced NaN/Inf; the message says where and what was kept."""
