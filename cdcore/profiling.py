"""Wall time and peak memory of a block, on CPU (RSS high-water) or CUDA (allocator peak)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import psutil
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible; set device: auto or cpu")
    return torch.device(name)


@dataclass
class Measurement:
    wall_s: float = 0.0
    peak_mem_mb: float = 0.0


@contextmanager
def measure(device: torch.device | str = "cpu", poll_s: float = 0.005) -> Iterator[Measurement]:
    """CUDA: peak allocated bytes; CPU: peak RSS growth above the start, sampled by a thread."""
    device = torch.device(device)
    m = Measurement()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        yield m
        torch.cuda.synchronize(device)
        m.wall_s = time.perf_counter() - t0
        m.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(poll_s)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.wall_s = time.perf_counter() - t0
        stop.set()
        th.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        m.peak_mem_mb = (peak[0] - base) / 2**20
