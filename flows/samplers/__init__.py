"""The MLflow pyfunc of each method's registered sampler, logged as code (never pickled): flows.tracking.sampler_code
names the file; each file ends with ``mlflow.models.set_model``."""

from typing import Any, Optional


def max_n(context: Any) -> Optional[int]:
    """The ceiling of one ``predict`` call that registration recorded (raise it with ``load_model(uri,
    model_config={"max_n": N})``); None for models registered before it was recorded."""
    config = getattr(context, "model_config", None) or {}
    return int(config["max_n"]) if "max_n" in config else None


def request(model_input, ceiling: Optional[int] = None) -> tuple[int, int]:
    """``(n, seed)`` of a ``predict`` call: a one-row table (or mapping) with columns ``n`` and ``seed``."""
    import numpy as np

    if hasattr(model_input, "to_dict"):
        rows = model_input.to_dict(orient="records")
        spec = rows[0] if rows else {}
    else:
        spec = dict(model_input)
    n, seed = int(np.ravel(spec.get("n", 1))[0]), int(np.ravel(spec.get("seed", 0))[0])
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if ceiling is not None and n > ceiling:
        raise ValueError(f"n = {n:,} is above this model's ceiling of {ceiling:,} samples per call; ask in several "
                         f"calls, or raise it: mlflow.pyfunc.load_model(uri, model_config={{'max_n': {n}}})")
    return n, seed


def enough(x, n: int, what: str):
    """A sampler never returns fewer points than asked without saying so."""
    if len(x) < n:
        raise RuntimeError(f"{what}: only {len(x)} of the {n} samples asked for are valid; the model may have "
                           "diverged (check its registered scores), or ask again with another seed")
    return x[:n]
