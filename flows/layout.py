"""Every path of a project folder, in one place: the stages, the flows, DVC (``dvc.yaml``) and the tests agree on it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdcore.benchmarks import Paths

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FOLDERS = ("data", "mirrors", "models", "samples", "reports", "registry", ".cache")


@dataclass(frozen=True)
class Layout:
    """Where each stage writes, relative to the project folder ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def data(self, name: str) -> Path:
        return self.root / "data" / f"{name}.h5"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def model(self, name: str) -> Path:
        return self.model_dir(name) / "score.pt"

    def checkpoint(self, name: str, fingerprint: str) -> Path:
        return self.root / ".cache" / "checkpoints" / f"{name}-{fingerprint[:16]}.ckpt"

    def samples(self, name: str) -> Path:
        return self.root / "samples" / f"{name}.h5"

    def report(self, name: str) -> Path:
        return self.root / "reports" / "datasets" / f"{name}.json"

    def map_png(self, name: str) -> Path:
        return self.root / "reports" / "datasets" / f"{name}_map.png"

    def mirror_dir(self, name: str) -> Path:
        return self.root / "mirrors" / name

    def mirror(self, name: str) -> Path:
        return self.mirror_dir(name) / "namm.pt"

    def no_mirror(self, name: str) -> Path:
        """The mirror stage's record for a method that fits no mirror map."""
        return self.mirror_dir(name) / "none.json"

    def registry(self, name: str) -> Path:
        return self.root / "registry" / f"{name}.json"

    def finetune_report(self, name: str) -> Path:
        return self.root / "reports" / "finetune" / f"{name}.json"

    def finetune_png(self, name: str) -> Path:
        return self.finetune_report(name).with_suffix(".png")

    def finetune_model(self, name: str) -> Path:
        return self.model(name)

    def summary(self) -> Path:
        return self.root / "reports" / "summary.json"

    def summary_md(self) -> Path:
        return self.root / "reports" / "summary.md"

    def bench_tables(self) -> Path:
        return self.root / "reports" / "bench_tables.md"

    def bench(self, name: str) -> Path:
        """``reports/bench/<name>``: a benchmark suite's JSON or figure."""
        return self.root / "reports" / "bench" / name

    def lock(self, name: str) -> Path:
        return self.root / ".cache" / "locks" / f"{name}.lock"

    def sweep(self, sweep_id: str) -> Path:
        return self.root / "sweeps" / sweep_id

    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

    def writer(self, path: str | Path) -> str | None:
        """The stage command that writes ``path`` (``data``, ``train``, …), None for a path no stage writes."""
        try:
            top = Path(path).resolve().relative_to(self.root.resolve()).parts[0]
        except (ValueError, IndexError):
            return None
        return {"data": "data", "mirrors": "mirror", "models": "train", "samples": "sample", "reports": "evaluate"}.get(top)


def default_paths(root: Path) -> "Paths":
    """Where benchmark inputs live: the project's assets, and ``CDCORE_SHARED`` or the shared/ folder beside the
    repository (absent: the benchmarks that need it are skipped, with the reason)."""
    from cdcore import benchmarks

    shared = os.environ.get("CDCORE_SHARED")
    shared_path = Path(shared) if shared else (REPO.parent / "shared")
    return benchmarks.Paths(assets=root / "assets", shared=shared_path if shared_path.is_dir() else None)
