"""One writer per data set and project folder: an exclusive ``flock`` on ``<root>/.cache/locks/<dataset>.lock``.

Every write is atomic, but two runs in one folder with different params could still leave a mixed set (data of
one, model of the other), so the stages and the Prefect flow hold this lock while they work on a data set.

- Re-entrant in the process: the flow holds it for a data set's whole chain and the stages inside take it again
  without blocking (Prefect may run them on another thread).
- An OS lock: the kernel drops it when the holder exits, even on SIGKILL. The file stays (removing it would race
  with a new holder); it holds only the holder's pid and command, for the message.
- A busy lock fails at once, or after ``CDCORE_LOCK_TIMEOUT`` seconds, with :class:`LockBusyError` (a
  ``DataError``: ``cdcore`` prints it and exits 2, Prefect does not retry it).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

from cdcore.data.errors import DataError
from flows.layout import Layout

TIMEOUT_ENV = "CDCORE_LOCK_TIMEOUT"
_POLL_S = 0.1

_held: dict[str, list[int]] = {}  # lock path -> [fd, depth], for this process
_acquiring: dict[str, threading.Lock] = {}  # lock path -> lock serialising this process's attempts on it
_guard = threading.Lock()  # protects both dicts; never held while waiting


class LockBusyError(DataError):
    """Another process is working on this data set in this project folder."""


def lock_path(root: Path | str, name: str) -> Path:
    return Layout(Path(root)).lock(name)


def lock_timeout() -> float:
    """Seconds to wait for a busy lock: ``$CDCORE_LOCK_TIMEOUT``, default 0 (do not wait)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        from cdcore.config import ConfigError

        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: must be a number of seconds >= 0 (0 = do not wait)")
    return value


def holder(path: Path | str) -> str:
    """Who holds the lock, as the holder wrote it: ``pid P (command, since T)``; '' if unknown."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    if len(lines) < 3:
        return ""
    return f"pid {lines[0]} ({lines[1]}, since {lines[2]})"


def _command() -> str:
    argv = list(sys.argv) or [sys.executable]
    argv[0] = os.path.basename(argv[0]) or argv[0]
    return shlex.join(argv)


def _acquire(path: Path, name: str, root: Path, timeout: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's note stays until we own it
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                who = holder(path) or "another process"
                waited = f" (waited {timeout:g}s)" if timeout > 0 else ""
                raise LockBusyError(
                    f"data set {name!r} in folder {root.resolve()} is being processed by {who}{waited}; "
                    f"wait for it (or set {TIMEOUT_ENV}=SECONDS to wait), or run with --root OTHER_FOLDER "
                    f"for a separate workspace") from None
            time.sleep(_POLL_S)
        except BaseException:
            os.close(fd)
            raise
    note = f"{os.getpid()}\n{_command()}\n{datetime.now().isoformat(timespec='seconds')}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, note, 0)
    return fd


@contextmanager
def dataset_lock(root: Path | str, name: str, timeout: Optional[float] = None) -> Iterator[Path]:
    """Hold the exclusive lock of data set ``name`` in folder ``root`` (re-entrant within this process)."""
    root = Path(root)
    path = lock_path(root, name)
    key = os.path.realpath(path)
    with _guard:
        acquiring = _acquiring.setdefault(key, threading.Lock())
    with acquiring:  # one thread of this process at a time tries to take this lock; others keep running
        with _guard:
            entry = _held.get(key)
            if entry is not None:
                entry[1] += 1
        if entry is None:
            fd = _acquire(path, name, root, lock_timeout() if timeout is None else timeout)
            with _guard:
                entry = _held[key] = [fd, 1]
    try:
        yield path
    finally:
        with _guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                try:
                    os.ftruncate(entry[0], 0)
                finally:
                    os.close(entry[0])  # closing the last descriptor releases the flock
