"""Checkpoints that can be written atomically and read without running code.

Only tensors and plain containers are stored, and reads use
``torch.load(weights_only=True)``: a planted pickle that would execute code is
refused instead of run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cdcore.data.io import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or holds something other than plain data."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the train stage first (`cdcore train`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... depending on the damage
        raise CheckpointError(
            f"{path}: refused to load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "The file is corrupt or holds objects other than tensors and plain data; delete it and re-run training"
        ) from None
