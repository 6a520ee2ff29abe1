"""Earth event catalogues: (latitude, longitude) in degrees <-> points on S²."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cdcore.data.errors import DataError


LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "lng", "long", "longitude")


def _number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _shown(row: list[str]) -> str:
    """A row as an error shows it: enough to find the fault, never a file's contents (the first cells, cut short)."""
    cells = [c if len(c) <= 12 else c[:12] + "…" for c in row[:3]]
    return repr(cells)[:-1] + (", …]" if len(row) > 3 else "]")


def _columns(path: Path, header: list[str]) -> tuple[int, int]:
    """(latitude, longitude) column indices named by a header; a header naming neither is refused."""
    names = [h.strip().lower() for h in header]
    lat = next((i for i, n in enumerate(names) if n in LAT_NAMES), None)
    lon = next((i for i, n in enumerate(names) if n in LON_NAMES), None)
    if lat is None or lon is None:
        missing = " and ".join(w for w, i in (("latitude", lat), ("longitude", lon)) if i is None)
        raise DataError(f"{path}: header {_shown(header)} names no {missing} column; name the columns "
                        f"{'/'.join(LAT_NAMES)} and {'/'.join(LON_NAMES)} (any case), or drop the header "
                        "to read the first two columns as latitude, longitude")
    return lat, lon


def read_latlon_csv(path: str | Path) -> np.ndarray:
    """Latitude and longitude in degrees from a CSV; '#' lines are comments.

    A first row without a single number is a header, and the columns are then taken by name (a file whose
    header reads ``longitude,latitude`` is not read swapped); without a header the first two columns are
    latitude, longitude.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as "
                        "UTF-8") from None
    lines = (line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    rows: list[tuple[float, float]] = []
    cols = (0, 1)
    for lineno, row in enumerate(csv.reader(lines), start=1):
        if lineno == 1 and row and not any(_number(v) for v in row):
            cols = _columns(path, row)
            continue
        try:
            rows.append((float(row[cols[0]]), float(row[cols[1]])))
        except (ValueError, IndexError):
            raise DataError(f"{path}: data row {lineno} is not 'latitude,longitude' numbers: {_shown(row)}") from None
    if not rows:
        raise DataError(f"{path}: no (latitude, longitude) rows found")
    arr = np.asarray(rows, dtype=np.float64)
    bad = (np.abs(arr[:, 0]) > 90) | (np.abs(arr[:, 1]) > 360) | ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: {int(bad.sum())} rows out of range (first: {arr[i].tolist()}); latitude must be in [-90, 90]")
    return arr


def latlon_to_xyz(latlon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.deg2rad(latlon_deg[:, 0]), np.deg2rad(latlon_deg[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def xyz_to_latlon(x: np.ndarray) -> np.ndarray:
    """Degrees; points need not be exactly unit (the direction is used)."""
    x = np.asarray(x, dtype=np.float64)
    r = np.linalg.norm(x, axis=1)
    lat = np.rad2deg(np.arcsin(np.clip(x[:, 2] / np.maximum(r, 1e-300), -1, 1)))
    lon = np.rad2deg(np.arctan2(x[:, 1], x[:, 0]))
    return np.stack([lat, lon], axis=1)
