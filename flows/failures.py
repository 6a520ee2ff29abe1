"""Which failures are the user's to fix (one line naming the cause and the fix, exit 2, never retried) and which
may pass (a busy database, a network blip: Prefect retries those).

A full disk, a read-only folder, a file where a folder should be, a network too large for memory or a corrupt
MLflow store fail the same way on every retry, so they count as deterministic too.
"""

from __future__ import annotations

import errno
from typing import Optional

from cdcore.checkpoint import CheckpointError
from cdcore.config import ConfigError
from cdcore.data.errors import DataError
from cdcore.methods.errors import DivergenceError

DETERMINISTIC = (ConfigError, DataError, DivergenceError, CheckpointError, ValueError, KeyError, MemoryError)
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_WRONG_TYPE = {errno.EISDIR, errno.ENOTDIR, errno.EEXIST}


def _out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text))


def _mlflow_store(e: BaseException) -> bool:
    kind = f"{type(e).__module__}.{type(e).__name__}"
    return kind.startswith(("sqlalchemy.", "mlflow.")) and (
        "not a database" in str(e) or "malformed" in str(e) or "no such table" in str(e))


def message(e: BaseException) -> Optional[str]:
    """The one line the user reads for a failure they must fix; None for an unexpected one (its traceback shows)."""
    if isinstance(e, (ConfigError, DataError, DivergenceError, CheckpointError)):
        return str(e)
    if isinstance(e, KeyError):
        return str(e.args[0]) if e.args else repr(e)
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
        return (f"no space left on the device writing {e.filename or 'an output'}; free some space or use --root "
                "on another disk (every output is written atomically: nothing half-written was kept)")
    if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
        return f"{e.filename or 'an output'}: not writable ({e.strerror}); use a writable --root or fix its permissions"
    if isinstance(e, OSError) and e.errno in _WRONG_TYPE:
        return (f"{e.filename or 'a path'}: {e.strerror}: a file or folder of the wrong type is where cdcore writes; "
                "move it away and run again")
    if _out_of_memory(e):
        return (f"not enough memory ({str(e).splitlines()[0][:200]}); lower model.hidden / model.depth or "
                "train.batch_size / sample.batch_size in params.yaml")
    if _mlflow_store(e):
        import os

        uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db")
        return (f"the MLflow store {uri} cannot be read ({str(e).splitlines()[0][:200]}); move the file aside "
                "(a new one is created) or point MLFLOW_TRACKING_URI at a working store")
    return None


def deterministic(e: BaseException) -> bool:
    """True when a retry would fail the same way."""
    return isinstance(e, DETERMINISTIC) or message(e) is not None
