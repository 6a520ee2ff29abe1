"""The benchmark tables, rendered from the JSON reports the benches wrote (``reports/bench/<suite>.json``): the
committed ci-scale results become Markdown by a command (``cdcore report``), never by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def _formatters() -> dict[str, tuple[str, Callable[[dict], str]]]:
    from cdcore.benchmarks import cost, dual, dual_finetune, landing, namm
    from cdcore.report.inverse import format_dps_report

    return {"landing.json": ("landing suite (`cdcore bench landing`)", landing.format_report),
            "cost.json": ("sampling cost (`cdcore bench cost`)", cost.format_cost_report),
            "namm.json": ("NAMM prior (`cdcore bench namm`)", namm.format_report),
            "namm_dps.json": ("NAMM inverse problems (`cdcore bench namm`)", format_dps_report),
            "dual.json": ("dual training, fairness (`cdcore bench dual`)", dual.format_dual_report),
            "dual_finetune.json": ("dual training, fine-tuning (`cdcore bench dual`)",
                                   dual_finetune.format_finetune_report)}


def render(folder: Path) -> str:
    """Every known report in ``folder`` as a Markdown section with the command and commit it records."""
    parts = ["# Benchmark tables", "", f"Rendered from `{folder.name}/*.json` by `cdcore report`."]
    found = False
    for file, (title, fmt) in _formatters().items():
        path = folder / file
        if not path.is_file():
            continue
        found = True
        report = json.loads(path.read_text())
        where = ", ".join(f"{k} {report[k]}" for k in ("scale", "device", "git_commit", "command") if k in report)
        parts += ["", f"## {title}", "", f"`{file}`" + (f": {where}" if where else ""), "", fmt(report)]
    if not found:
        parts += ["", "No benchmark report yet: run `cdcore bench ...`, which writes them here."]
    return "\n".join(parts) + "\n"
