"""The MLflow pyfunc of each method's registered sampler, logged as code (never pickled): flows.tracking.sampler_code
names the file; each file ends with ``mlflow.models.set_model``."""


def request(model_input) -> tuple[int, int]:
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
    return n, seed
