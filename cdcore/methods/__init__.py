"""Methods: each a training function and a sampler built on constraints and dynamics."""
