"""MLflow pyfunc of a NAMM sampler: mirror-space score model + fitted maps, logged as code (no pickles).

``predict`` takes a table with columns ``n`` and ``seed`` (one row) and returns (n, C, H, W) images in the
constrained space: the reverse SDE runs in mirror space and ``f`` maps the result back. The last call's
constraint distances (mean, max) are kept on the object as ``last_report``.
"""

from __future__ import annotations

import mlflow


class NammSampler(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        from cdcore.methods.namm.io import load_sampler

        from flows.samplers import max_n

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bundle = load_sampler(context.artifacts["weights"], self.device)
        self.max_n = max_n(context)
        self.last_report: dict[str, float] = {}

    def predict(self, context, model_input, params=None):
        from cdcore.methods.namm.evaluate import distances
        from cdcore.methods.namm.io import draw

        from flows.samplers import enough, request

        n, seed = request(model_input, self.max_n)
        x = draw(self.bundle, n, seed)
        enough(x[x.flatten(1).isfinite().all(dim=1)], n, "NAMM sampler")
        d = distances(self.bundle["constraint"], x)
        self.last_report = {"constraint_mean": float(d.mean()), "constraint_max": float(d.max())}
        return x.float().cpu().numpy()


mlflow.models.set_model(NammSampler())
