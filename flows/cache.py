"""The one ``@stage`` mechanism: every stage of every method holds its data set's lock, clears a killed writer's
temporary files, skips when its output records the fingerprint of the same inputs, and otherwise runs inside
one MLflow stage run, with progress and logging helpers that are no-ops when tracking is off.

Writing this once is what lets a stage module hold only the stage's own work, and guarantees that a re-run after
a crash skips exactly the stages that finished (each output stores the fingerprint it was made from).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import h5py

from cdcore.checkpoint import load_checkpoint
from cdcore.data import io
from cdcore.data.errors import DataError
from flows import tracking
from flows.layout import Layout
from flows.lock import dataset_lock

log = logging.getLogger("cdcore")
ProgressFn = Callable[[int, dict], None]


# ----- fingerprints ---------------------------------------------------------------------------------------------
def digest(obj: Any) -> str:
    """The fingerprint of plain data: sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def plain(model: Any) -> Any:
    """A config model as JSON data (anything else unchanged), for fingerprints and logged params."""
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def stored_fingerprint(path: Path) -> Optional[str]:
    """The fingerprint an output recorded (HDF5 attribute, checkpoint meta or JSON key); None if unreadable."""
    if not path.exists():
        return None
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                return f.attrs.get("fingerprint")
        if path.suffix == ".pt":
            return load_checkpoint(path)["meta"]["fingerprint"]
        if path.suffix == ".json":
            return json.loads(path.read_text()).get("fingerprint")
    except Exception:  # unreadable outputs are simply redone
        return None
    return None


def up_to_date(path: Path, fingerprint: str, stage: str, name: str) -> bool:
    if stored_fingerprint(path) == fingerprint:
        log.info("%s[%s]: up to date (%s), skipped", stage, name, path)
        return True
    return False


# ----- what a stage body works with ------------------------------------------------------------------------------
def _but_step(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "step"}


@dataclass
class Stage:
    """One stage of one data set in one project folder, as its body sees it."""

    stage: str
    name: str
    layout: Layout
    out: Path
    fingerprint: Optional[str] = None
    run: Any = None                       # the MLflow stage run, None when tracking is off
    inputs: Any = None                    # what the stage's ``load`` read before the fingerprint
    on_progress: Optional[ProgressFn] = None
    parent_run_id: Optional[str] = None

    @property
    def root(self) -> Path:
        return self.layout.root

    def log_params(self, values: dict[str, Any]) -> None:
        if self.run:
            tracking.log_params(values)

    def log_metrics(self, values: dict[str, Any], step: Optional[int] = None) -> None:
        if self.run:
            tracking.log_metrics(values, step=step)

    def log_artifact(self, path: Path, folder: str) -> None:
        if self.run:
            tracking.log_artifact(path, folder)

    def log_rows(self, rows: list[dict], key: str = "sampler") -> None:
        """Every numeric field of each row as ``<row[key]>.<field>``."""
        for r in rows:
            self.log_metrics({f"{r[key]}.{k}": v for k, v in r.items() if isinstance(v, (int, float))})

    def progress(self, metrics: Callable[[dict], dict] = _but_step,
                 echo: Callable[[dict], dict] = lambda row: row) -> ProgressFn:
        """The callback a cdcore training loop reports to: ``metrics(row)`` to MLflow, ``echo(row)`` to the caller."""
        def report(step: int, row: dict) -> None:
            self.log_metrics(metrics(row), step=step)
            if self.on_progress:
                self.on_progress(step, echo(row))

        return report

    def checkpoint(self) -> Path:
        """The resume checkpoint of this fingerprint; those of earlier fingerprints are deleted."""
        ckpt = self.layout.checkpoint(self.name, self.fingerprint or "")
        for stale in ckpt.parent.glob(f"{self.name}-*.ckpt"):
            if stale != ckpt:
                stale.unlink()
        return ckpt

    def write_json(self, path: Path, obj: Any, **dump: Any) -> Path:
        io.write_text_atomic(path, json.dumps(obj, **dump))
        return path

    def history(self, history: Any, curve: Callable[[Path], None], indent: Optional[int] = 1,
                png: str = "loss.png") -> None:
        """The training history beside the output, its figure (``curve(path)``), the figure logged."""
        self.write_json(self.out.parent / "history.json", history, indent=indent)
        curve(self.out.parent / png)
        self.log_artifact(self.out.parent / png, "plots")

    def evaluation(self, report: dict) -> list[dict]:
        """Write the evaluate stage's report, log its rows, its figure and itself; return the rows."""
        self.write_json(self.layout.report(self.name), report, indent=1)
        self.log_rows(report["rows"])
        self.log_artifact(self.layout.map_png(self.name), "plots")
        self.log_artifact(self.layout.report(self.name), "reports")
        return report["rows"]


@contextmanager
def _upstream(lay: Layout, dataset: str) -> Iterator[None]:
    """A stage run before the stage that writes its input: one line naming the command to run first."""
    try:
        yield
    except FileNotFoundError as e:
        writer = lay.writer(Path(e.filename)) if e.filename else None
        if writer is None:
            raise
        raise DataError(f"{e.filename}: missing; run `cdcore {writer} --dataset {dataset}` first "
                        "(or `cdcore run` for every stage in order)") from None


# ----- the decorator -----------------------------------------------------------------------------------------------
def stage(name: str, output: Callable[[Layout, str], Path], fingerprint: Optional[Callable[..., str]] = None, *,
          track: bool = True, load: Optional[Callable[[Any, str, Path], Any]] = None,
          reuse: Callable[[Path], Any] = lambda out: out, after: Optional[Callable[..., Any]] = None) -> Callable:
    """Make ``body(params, st: Stage) -> result`` the stage ``run(params, dataset, root, parent_run_id=None,
    on_progress=None)``.

    In order, holding the data set's lock (flows/lock.py, re-entrant): remove stale temporary files of the output's
    folder; ``load(params, dataset, root)`` if given (inputs the fingerprint depends on, passed as ``st.inputs``);
    ``fingerprint(params, dataset, root[, inputs])``; if the output records it, return ``reuse(output)``; else run
    the body inside the MLflow stage run (``track``), then ``after(params, st, result)`` outside that run (work that
    opens runs of its own, such as registering a model: MLflow refuses a second parent while one is active).
    Without ``fingerprint`` the stage always runs.
    """
    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        def run(params: Any, dataset: str, root: Path | str, parent_run_id: Optional[str] = None,
                on_progress: Optional[ProgressFn] = None) -> Any:
            lay = Layout(Path(root))
            out = output(lay, dataset)
            with dataset_lock(lay.root, dataset), _upstream(lay, dataset):
                io.remove_stale_temps(out.parent)
                st = Stage(name, dataset, lay, out, on_progress=on_progress, parent_run_id=parent_run_id)
                if load is not None:
                    st.inputs = load(params, dataset, lay.root)
                if fingerprint is not None:
                    extra = () if load is None else (st.inputs,)
                    st.fingerprint = fingerprint(params, dataset, lay.root, *extra)
                    if up_to_date(out, st.fingerprint, name, dataset):
                        return reuse(out)
                with tracking.stage_run(name, dataset, parent_run_id) if track else nullcontext() as st.run:
                    result = body(params, st)
                return after(params, st, result) if after is not None else result

        functools.update_wrapper(run, body)
        del run.__wrapped__  # the signature is run's, not the body's
        return run

    return decorate
