"""Earth event catalogues: (latitude, longitude) in degrees <-> points on S²."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cdcore.data.errors import DataError


def read_latlon_csv(path: str | Path) -> np.ndarray:
    """Read a CSV whose first two columns are latitude and longitude in degrees; '#' lines are comments."""
    path = Path(path)
    rows: list[tuple[float, float]] = []
    with open(path, newline="") as f:
        lines = (line for line in f if line.strip() and not line.lstrip().startswith("#"))
        reader = csv.reader(lines)
        header_seen = False
        for lineno, row in enumerate(reader, start=1):
            try:
                lat, lon = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                if not header_seen and rows == []:
                    header_seen = True  # a header line such as "lat,lon"
                    continue
                raise DataError(f"{path}: data row {lineno} is not 'latitude,longitude' numbers: {row!r}") from None
            rows.append((lat, lon))
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
