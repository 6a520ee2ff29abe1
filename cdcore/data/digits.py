"""Digits for the fairness experiment (dual.md §2.2): offline, seeded, with a balanced held-out test split.

``load_digits_split`` uses scikit-learn's bundled 8×8 digits (levels 0–16,
scaled by x/8 − 1 into [−1, 1]). The test split is *exactly* balanced and is
never used to train a generator: it is the reference for the evaluation
classifier's accuracy/confusion and for the Fréchet distance. From the rest, a
class-balanced "oracle" train set is taken (the evaluation classifier's data),
and the biased set q keeps all of it for the majority classes but only a seeded
fraction ρ of each minority class (the paper's "balanced subset, then remove
minority samples"). Every q^i is a subset of q, as in the paper.

``load_mnist_idx`` reads MNIST IDX files (gzipped or raw) from a local path,
for runs on a machine that has them; nothing here downloads.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import Field, field_validator

from cdcore.config import Strict

MINORITY = (4, 5, 7)
NUM_CLASSES = 10


class DigitsCfg(Strict):
    rho: float = Field(0.1, gt=0, le=1, description="fraction of each minority class kept in the biased set")
    minority: list[int] = Field(default_factory=lambda: list(MINORITY), min_length=1, max_length=9)
    test_fraction: float = Field(0.3, gt=0, lt=1, description="test size per class = floor(fraction · smallest class)")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("minority")
    @classmethod
    def _classes(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(c < 0 or c >= NUM_CLASSES for c in v):
            raise ValueError(f"minority must be distinct digits 0–9, got {v}")
        return v


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray      # balanced real train set, float32 (n, 64) in [−1, 1]
    y_train: np.ndarray
    x_test: np.ndarray       # balanced held-out test set; never used to train a generator
    y_test: np.ndarray
    x_biased: np.ndarray     # q: majority classes in full, minorities at fraction rho (subset of x_train)
    y_biased: np.ndarray
    minority: tuple[int, ...]
    rho: float
    seed: int

    @property
    def class_shares(self) -> np.ndarray:
        """π_c of the biased set."""
        return np.bincount(self.y_biased, minlength=NUM_CLASSES) / len(self.y_biased)

    def constraint_sets(self) -> dict[int, np.ndarray]:
        """q^i: the kept samples of each minority class."""
        return {c: self.x_biased[self.y_biased == c] for c in self.minority}


def scale_levels(x: np.ndarray, top: float) -> np.ndarray:
    """Map levels 0..top to [−1, 1] as float32."""
    return (np.asarray(x, dtype=np.float32) * (2.0 / top) - 1.0).astype(np.float32)


def load_digits_split(cfg: DigitsCfg | None = None) -> DigitsSplit:
    from sklearn.datasets import load_digits

    cfg = cfg or DigitsCfg()
    d = load_digits()
    x, y = scale_levels(d.data, 16.0), d.target.astype(np.int64)
    rng = np.random.default_rng(cfg.seed)
    counts = np.bincount(y, minlength=NUM_CLASSES)
    n_test = int(np.floor(cfg.test_fraction * counts.min()))
    n_train = int(counts.min()) - n_test
    if n_test < 1 or n_train < 1:
        raise ValueError(f"test_fraction {cfg.test_fraction} leaves an empty train or test split")
    tr, te, bi = [], [], []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        te.append(idx[:n_test])
        train_c = idx[n_test:n_test + n_train]          # balanced: every class trimmed to the smallest
        tr.append(train_c)
        keep = max(1, int(round(cfg.rho * n_train))) if c in cfg.minority else n_train
        bi.append(train_c[:keep])                      # train_c is already a random permutation
    tr_i, te_i, bi_i = (np.concatenate(a) for a in (tr, te, bi))
    tr_i, te_i, bi_i = rng.permutation(tr_i), rng.permutation(te_i), rng.permutation(bi_i)
    return DigitsSplit(x[tr_i], y[tr_i], x[te_i], y[te_i], x[bi_i], y[bi_i],
                       tuple(cfg.minority), cfg.rho, cfg.seed)


def biased_splits(cfg: DigitsCfg, exclude: Sequence[int] = ()) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                        np.ndarray]:
    """The pipeline's three splits (train: the biased set q without the ``exclude`` classes; val: the balanced
    real digits the evaluation classifier learns from; test: balanced held-out), their labels and the training
    set's class counts."""
    split = load_digits_split(cfg)
    keep = ~np.isin(split.y_biased, list(exclude))
    splits = {"train": split.x_biased[keep], "val": split.x_train, "test": split.x_test}
    labels = {"train": split.y_biased[keep], "val": split.y_train, "test": split.y_test}
    return splits, labels, np.bincount(labels["train"], minlength=NUM_CLASSES)


# ----- MNIST IDX ----------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST file format); gzip is detected from the magic bytes, not the name."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{path}: IDX header says {shape} but the body has {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, arr: np.ndarray, compress: bool = False) -> None:
    """Inverse of :func:`read_idx` (uint8 only: what MNIST uses); for tests and small exports."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError("write_idx writes uint8 arrays only")
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    Path(path).write_bytes(gzip.compress(raw) if compress else raw)


def load_mnist_idx(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (n, rows·cols) in [−1, 1], y int64) from local IDX image/label files."""
    img, lab = read_idx(images), read_idx(labels)
    if img.ndim != 3 or lab.ndim != 1 or len(img) != len(lab):
        raise ValueError(f"images {img.shape} and labels {lab.shape} do not form an (n, rows, cols)/(n,) pair")
    return scale_levels(img.reshape(len(img), -1), 255.0), lab.astype(np.int64)
