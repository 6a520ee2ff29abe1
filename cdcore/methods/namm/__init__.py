"""Neural approximate mirror maps (NAMM, Feng, Baptista & Bouman, ICLR 2025): mirror maps g, f and their
losses, diffusion in mirror space, fine-tuning of f, and mirror DPS for inverse problems."""
