"""MLflow pyfunc of a dual-trained (KL-constrained) DDPM, logged as code (no pickled objects).

``predict`` takes a table with columns ``n`` and ``seed`` (one row) and returns an (n, 64) array of 8×8
digits in [−1, 1]. The ε-model itself is ``self.model`` (a :class:`cdcore.methods.dual.Denoiser`): the
fine-tuning flow starts from it (``unwrap_python_model().model``).
"""

from __future__ import annotations

import mlflow


class DualSampler(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        from cdcore.methods.dual import load_dual

        from flows.samplers import max_n

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.cfg, self.meta = load_dual(context.artifacts["weights"], self.device)
        self.max_n = max_n(context)

    def predict(self, context, model_input, params=None):
        from cdcore.methods.dual import sample_ddpm

        from flows.samplers import enough, request

        n, seed = request(model_input, self.max_n)
        x = sample_ddpm(self.model, n, seed=seed, device=self.device, cfg=self.cfg.sampler)
        return enough(x[x.isfinite().all(dim=1)], n, "dual DDPM sampler").numpy()


mlflow.models.set_model(DualSampler())
