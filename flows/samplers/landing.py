"""MLflow pyfunc of a trained landing sampler, logged as code (no pickled objects).

``predict`` takes a table with columns ``n`` and ``seed`` (one row) and returns
an (n, d) array of samples in the constrained space; the terminal Newton
projection makes them feasible to ``newton_tol``. The last call's maximum
violation and drop count are kept on the object as ``last_report``.
"""

from __future__ import annotations

import mlflow


class LandingSampler(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        from cdcore.constraints import from_record
        from cdcore.methods.landing.io import load_model

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.schedule, self.dyn_cfg, self.meta = load_model(context.artifacts["weights"], device)
        self.constraint = from_record(self.meta)
        self.device = device
        self.last_report: dict[str, float] = {}

    def predict(self, context, model_input, params=None):
        from cdcore.methods.landing import sample_landing

        from flows.samplers import request

        n, seed = request(model_input)
        res = sample_landing(self.model, self.constraint, self.schedule, self.dyn_cfg, n, seed=seed, device=self.device)
        x = res.x[~res.dropped]
        viol = self.constraint.violation(x.double()) if len(x) else x.new_zeros(0)
        self.last_report = {"violation_max": float(viol.max()) if len(viol) else 0.0, "dropped": int(res.dropped.sum())}
        return x.float().cpu().numpy()


mlflow.models.set_model(LandingSampler())
