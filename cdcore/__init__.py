"""cdcore: constrained diffusion models (landing, NAMM, dual training) as a plain PyTorch library."""

__version__ = "0.1.0"
