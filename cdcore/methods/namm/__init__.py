"""Neural approximate mirror maps (NAMM, Feng, Baptista & Bouman, ICLR 2025): mirror maps g, f and their
losses, diffusion in mirror space, fine-tuning of f, and mirror DPS for inverse problems.

``loss`` the NAMM loss and the constraint distance, ``fit`` the fit of (g, f) and the fine-tuning of f,
``train`` the mirror-space score model, ``sample`` mirror-space sampling and mirror DPS, ``evaluate`` the
constraint distances and the map's diagnostics.
"""
