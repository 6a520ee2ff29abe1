"""HDF5 schema of cdcore data and sample files, with checked reads and atomic writes.

Data file (one per data set), schema_version 1::

    /train, /val, /test   float32 (n_split, d), feasible points
    attrs: schema_version, constraint (name), constraint_spec (JSON), dim,
           source (path or "synthetic:<kind>"), source_sha256, seed,
           split (JSON fractions), generator (JSON of the data set's params)

Sample file (one per data set)::

    /<sampler>/x        float32 (n, d)
    /<sampler>/dropped  bool (n,)
    attrs on the group: nfe, newton_iters_mean, wall_s, peak_mem_mb, device
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Any, Iterator

import h5py
import numpy as np

from cdcore.data.earth import read_latlon_csv
from cdcore.data.errors import DataError, MissingInput

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A crash mid-write leaves the previous file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():      # mkstemp makes 0600; a finished output gets the usual mode for the umask
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files left by a killed writer (its PID is gone); live writers' files are kept."""
    import psutil

    removed = []
    folder = Path(folder)
    if not folder.exists():
        return removed
    for tmp in folder.rglob(".*.tmp"):
        parts = tmp.name.split(".")
        pid = next((int(p) for p in parts if p.isdigit()), None)
        if pid is None or not psutil.pid_exists(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path, remedy: str) -> Any:
    """A JSON file this project wrote, or a :class:`DataError` naming it and ``remedy`` (missing, corrupt, not UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; {remedy}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid JSON report ({type(e).__name__} at byte "
                        f"{getattr(e, 'pos', getattr(e, 'start', '?'))}); {remedy}") from None


def write_dataset(path: str | Path, splits: dict[str, np.ndarray], attrs: dict[str, Any],
                  labels: Optional[dict[str, np.ndarray]] = None) -> None:
    """``labels`` (optional, per split, int): class labels stored beside the points under /labels/<split>."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
            for name in SPLITS:
                arr = np.asarray(splits[name], dtype=np.float32)
                f.create_dataset(name, data=arr, chunks=(min(len(arr), 4096), arr.shape[1]) if len(arr) else None)
            for name, lab in (labels or {}).items():
                lab = np.asarray(lab, dtype=np.int64)
                if lab.shape != (len(splits[name]),):
                    raise ValueError(f"labels[{name!r}] has shape {lab.shape}; expected ({len(splits[name])},)")
                f.create_dataset(f"labels/{name}", data=lab)


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """The /labels/<split> arrays of a data file, checked against the splits' lengths."""
    path = Path(path)
    with _open(path) as f:
        if "labels" not in f:
            raise DataError(f"{path}: no /labels group; this data set has no class labels (re-run `cdcore data`)")
        out = {}
        for name in SPLITS:
            if name not in f["labels"] or name not in f:
                raise DataError(f"{path}: /labels/{name} missing; re-run `cdcore data`")
            lab = f["labels"][name][()]
            if lab.ndim != 1 or len(lab) != len(f[name]) or not np.issubdtype(lab.dtype, np.integer):
                raise DataError(f"{path}: /labels/{name} has shape {lab.shape}, dtype {lab.dtype}; expected "
                                f"({len(f[name])},) integers; re-run `cdcore data`")
            out[name] = lab.astype(np.int64)
    return out


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise MissingInput(path)
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e}); delete it and re-run the stage that writes it") from None


def _check_array(path: Path, key: str, arr: np.ndarray, dim: int | None) -> None:
    if arr.ndim != 2:
        raise DataError(f"{path}:/{key} has shape {arr.shape}; expected (n, d)")
    if dim is not None and arr.shape[1] != dim:
        raise DataError(f"{path}:/{key} has {arr.shape[1]} columns; the file's attribute dim says {dim}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}:/{key} has dtype {arr.dtype}; expected floating point")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(f"{path}:/{key} has {int(bad.sum())} rows with NaN or Inf (first at row {int(np.argmax(bad))})")


def read_dataset(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and check a data file: schema version, splits present, shapes, finiteness."""
    path = Path(path)
    f = _open(path)
    with f:
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}; re-run `cdcore data`")
        for key in ("constraint", "dim"):
            if key not in attrs:
                raise DataError(f"{path}: attribute {key!r} missing; re-run `cdcore data`")
        out = {}
        for name in SPLITS:
            if name not in f:
                raise DataError(f"{path}: data set /{name} missing; re-run `cdcore data`")
            try:
                arr = f[name][()]
            except OSError as e:
                raise DataError(f"{path}:/{name} cannot be read ({e}); the file is truncated or corrupt, re-run `cdcore data`") from None
            _check_array(path, name, arr, int(attrs["dim"]))
            out[name] = arr
    return out, attrs


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_samples(path: str | Path, groups: dict[str, dict[str, Any]], attrs: dict[str, Any]) -> None:
    """groups: sampler -> {"x": array, "dropped": array, **scalar attrs}."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
            for name, content in groups.items():
                grp = f.create_group(name)
                grp.create_dataset("x", data=np.asarray(content["x"], dtype=np.float32))
                grp.create_dataset("dropped", data=np.asarray(content["dropped"], dtype=bool))
                for k, v in content.items():
                    if k not in ("x", "dropped"):
                        grp.attrs[k] = v


def read_samples(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    path = Path(path)
    f = _open(path)
    with f:
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
        groups = {}
        for name, grp in f.items():
            if "x" not in grp or "dropped" not in grp:
                raise DataError(f"{path}:/{name} lacks x or dropped; re-run `cdcore sample`")
            x = grp["x"][()]
            # non-finite samples are a result to report (divergence), not a schema error
            if x.ndim != 2:
                raise DataError(f"{path}:/{name}/x has shape {x.shape}; expected (n, d)")
            groups[name] = {"x": x, "dropped": grp["dropped"][()], **{k: _decode(v) for k, v in grp.attrs.items()}}
    return groups, attrs


def load_points(path: str | Path, fmt: str = "auto") -> tuple[np.ndarray, str]:
    """Read user points: returns (array, kind) with kind 'latlon' (degrees, (n, 2)) or 'points'."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; fix `path` of this data set in params.yaml")
    if fmt == "auto":
        fmt = {".csv": "latlon_csv", ".npy": "npy", ".h5": "h5", ".hdf5": "h5"}.get(path.suffix.lower(), "")
        if not fmt:
            raise DataError(f"{path}: cannot tell the format from the suffix; set `format` (latlon_csv, npy, h5)")
    if fmt == "latlon_csv":
        return read_latlon_csv(path), "latlon"
    if fmt == "npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
    else:
        f = _open(path)
        with f:
            keys = [k for k in ("points", "x", "data") if k in f] or [k for k in f if isinstance(f[k], h5py.Dataset)]
            if not keys:
                raise DataError(f"{path}: no data set found; store the points as /points with shape (n, d)")
            arr = f[keys[0]][()]
    arr = np.asarray(arr)
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected a numeric array (n, d), found shape {arr.shape} dtype {arr.dtype}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} rows contain NaN or Inf (first at row {int(np.argmax(bad))}); clean the file")
    return arr.astype(np.float64), "points"


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Seeded random 80/10/10-style split; each part gets at least one point."""
    if n < 3:
        raise DataError(f"need at least 3 points to split into train/val/test, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    return {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
