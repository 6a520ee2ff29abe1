"""MLflow pyfunc of a trained landing sampler, logged as code (no pickled objects).

``predict`` takes a table with columns ``n`` and ``seed`` (one row) and returns
an (n, d) array of samples in the constrained space; the terminal Newton
projection makes them feasible to ``newton_tol`` (points where it fails are
redrawn; fewer than n valid points raise). The last call's maximum violation
and drop count are kept on the object as ``last_report``.
"""

from __future__ import annotations

import mlflow


class LandingSampler(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        from cdcore.constraints import from_record

        from flows.samplers import max_n
        from cdcore.methods.landing.io import load_model

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.schedule, self.dyn_cfg, self.meta = load_model(context.artifacts["weights"], device)
        self.constraint = from_record(self.meta)
        self.device = device
        self.max_n = max_n(context)
        self.last_report: dict[str, float] = {}

    def predict(self, context, model_input, params=None):
        import torch

        from cdcore.methods.landing import sample_landing

        from flows.samplers import enough, request

        n, seed = request(model_input, self.max_n)
        kept, dropped = [], 0
        for attempt in range(3):  # points whose terminal projection failed are redrawn, with seeds of their own
            want = n - sum(len(x) for x in kept)
            res = sample_landing(self.model, self.constraint, self.schedule, self.dyn_cfg, want,
                                 seed=seed + 1_000_003 * attempt, device=self.device)
            kept.append(res.x[~res.dropped])
            dropped += int(res.dropped.sum())
            if not bool(res.dropped.any()):
                break
        x = enough(torch.cat(kept), n, "landing sampler")
        viol = self.constraint.violation(x.double())
        self.last_report = {"violation_max": float(viol.max()), "dropped": dropped}
        return x.float().cpu().numpy()


mlflow.models.set_model(LandingSampler())
