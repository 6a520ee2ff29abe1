"""Constrained diffusion by dual training (Khalafi, Ding, Ribeiro, NeurIPS 2024; dual.md §1).

The problem  min KL(q‖p_θ)  s.t.  KL(q^i‖p_θ) ≤ b_i  is trained through DDPM
ε-prediction losses: each KL is bounded by the diffusion loss on a batch of its
*own* distribution (objective batch from the full biased data q, one batch per
constraint). Training alternates N primal AdamW steps on the Lagrangian
``L = loss_0 + Σ λ_i loss_i`` with one projected dual step
``λ ← [λ + η (loss_i − b̃_i − 2γλ_i)]₊`` (γ = 0: Alg. 2; γ > 0: the resilient
Alg. 3, whose fixed point with b̃ = 0 is λ = loss/(2γ)). Because every forward
process shares q(x_{1:T}|x_0), minimising the Lagrangian is ordinary training on
the mixture (q + Σ λ_i q^i)/(1 + Σλ) (Theorem 1); :func:`predicted_shares` turns
λ into the class shares that mixture predicts, and they are logged beside λ so
a classifier histogram can be held against them.

Public API (all typed, no tracking side effects; progress goes to a callback); ``model`` the ε-network,
``kl`` the KL constraints, ``ascent`` the dual update, ``train`` the primal–dual loop, ``sample`` the sampler,
``io`` the checkpoints, ``evaluate`` the digit classifier and the class-share evaluation::

    train_dual(data, cfg, seed, device, on_progress, init=None, checkpoint=None) -> DualOutcome
    train_finetune(x_new, teacher, cfg, seed, device, on_progress) -> DualOutcome
    sample_ddpm(model, n, seed, device, labels=None, cfg=None) -> Tensor (n, d) on CPU
    DualData.from_labelled(x, y, constraint_classes)   # fairness set-up
    oracle_lambdas(class_shares, constraint_classes)   # fixed-λ reweighting baseline
    save_dual(path, outcome, cfg) / load_dual(path, device)

Baselines share the code path: ``dual.mode="unconstrained"`` (λ ≡ 0; the
constraint losses are still measured and logged), ``"fixed"`` (λ from
:func:`oracle_lambdas`: per-class reweighting with oracle weights) and a
class-conditional denoiser (``model.num_classes > 0``) sampled with
:func:`uniform_labels`.

Fine-tuning (§1.4): the constraint is the distillation loss
E‖ε̂_pre(x_t,t) − ε̂_θ(x_t,t)‖² against a frozen pretrained model, with x_t
either pure noise (the paper's shortcut, ``source="noise"``) or the forward-noised
samples of the pretrained model (the faithful variant, ``source="samples"``).

The dual ascent is in-house (:class:`DualAscent`, ~30 lines) rather than
cooper-optim: the paper's loop (N primal steps, then one dual step that reuses
the batch losses already computed for the Lagrangian, plus the resilient term)
does not map onto cooper's ``roll`` without workarounds, and it adds a pinned
dependency for arithmetic that a unit test pins exactly.
"""

from cdcore.config.dual import (DDPMCfg, DenoiserCfg, DualAscentCfg, DualCfg, DualTrainCfg, FinetuneCfg,
                                SamplerCfg, ddpm_betas)
from cdcore.methods.dual.ascent import DualAscent, mixture_weights, oracle_lambdas, predicted_shares, uniform_labels
from cdcore.methods.dual.io import CKPT_FORMAT, load_dual, save_dual
from cdcore.methods.dual.kl import DataConstraint, DistillConstraint, DualData, KLConstraint
from cdcore.methods.dual.model import Denoiser, Draw, build_denoiser, draw_eps, draw_losses, eps_loss, q_sample
from cdcore.methods.dual.sample import sample_ddpm
from cdcore.methods.dual.train import DualOutcome, ProgressFn, train_dual, train_finetune
from cdcore.methods.errors import DivergenceError

__all__ = ["DDPMCfg", "DenoiserCfg", "DualAscentCfg", "DualCfg", "DualTrainCfg", "FinetuneCfg", "SamplerCfg",
           "ddpm_betas", "DualAscent", "mixture_weights", "oracle_lambdas", "predicted_shares", "uniform_labels",
           "CKPT_FORMAT", "load_dual", "save_dual", "DataConstraint", "DistillConstraint", "DualData", "KLConstraint",
           "Denoiser", "Draw", "build_denoiser", "draw_eps", "draw_losses", "eps_loss", "q_sample", "sample_ddpm",
           "DualOutcome", "ProgressFn", "train_dual", "train_finetune", "DivergenceError"]
