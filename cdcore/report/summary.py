"""The pipeline's results as Markdown: one row per (data set, sampler), and the fine-tuning comparison."""

from __future__ import annotations

COLUMNS = [("dataset", "{}"), ("sampler", "{}"), ("metric", "{}"), ("score", "{:.3f}"), ("score_floor", "{:.3f}"),
           ("score_reference", "{:.3f}"), ("violation_max", "{:.1e}"), ("drop_rate", "{:.4f}"), ("nfe", "{}"),
           ("newton_iters", "{:.1f}"), ("wall_s", "{:.2f}"), ("peak_mem_mb", "{:.0f}")]


def format_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " | detail |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|---|"
    body = ["| " + " | ".join(f.format(r[c]) for c, f in COLUMNS) + f" | {detail(r)} |" for r in rows]
    return "\n".join([head, sep, *body])


def detail(r: dict) -> str:
    """What the method promises, per row: the feasibility of NAMM samples, the class shares of dual training."""
    if r.get("method") == "namm":
        return f"constraint distance mean {r['constraint_mean']:.2g} (held-out data {r['data_constraint_mean']:.2g})"
    if r.get("method") == "dual":
        shares = ", ".join(f"{k.split('/')[1]}: {v:.3f}" for k, v in r.items() if k.startswith("share/"))
        return f"corrected shares {shares} (uniform 0.100)"
    return f"target {r['score_target']:.3f}" if r.get("score_target") == r.get("score_target") else ""


def format_finetune_rows(rows: list[dict]) -> str:
    head = "| variant | share of old digits | share of new | FD (floor) | λ | low-confidence |\n|---|---|---|---|---|---|"
    body = [f"| {r['variant']} | {r['share_old']:.3f} | {r['share_new']:.3f} | {r['fd']:.1f} ({r['fd_floor']:.1f}) | "
            f"{r['lambda_final']:.3g} | {r['low_conf_rate']:.3f} |" for r in rows]
    return "\n".join([head, *body])


def summary_markdown(rows: list[dict], finetune: dict[str, dict]) -> str:
    """reports/summary.md: the results table, then each fine-tuning experiment's comparison."""
    text = format_table(rows) + "\n"
    for n, rep in finetune.items():
        text += f"\n### fine-tuning {n} (from {rep['source']})\n\n{format_finetune_rows(rep['rows'])}\n"
    return text


def model_card(model: str, alias: str, dataset: str, method: str, constraint: str, shape: tuple[int, ...],
               rows: list[dict], max_n: int) -> str:
    """The description of a registered model: what it samples, how good it is on the test split, how to call it."""
    def num(v: object, fmt: str) -> str:
        return fmt.format(v) if isinstance(v, (int, float)) else "–"

    table = ["| sampler | metric | score (test) | floor | reference | max violation | drop rate | NFE |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['sampler']} | {r.get('metric', '–')} | {num(r.get('score'), '{:.4g}')} | "
              f"{num(r.get('score_floor'), '{:.4g}')} | {num(r.get('score_reference'), '{:.4g}')} | "
              f"{num(r.get('violation_max'), '{:.2g}')} | {num(r.get('drop_rate'), '{:.4f}')} | {r.get('nfe', '–')} |"
              for r in rows]
    dims = "×".join(map(str, shape))
    return "\n".join([
        f"Samples the data set `{dataset}` with the method `{method}` on the constraint `{constraint}` "
        f"(each sample of shape {dims}).",
        "",
        "Scores on the held-out test split (lower is better; *floor*: the training split scored against the test "
        "split, the best a model can be expected to reach; *reference*: the method's prior or baseline):",
        "",
        *table,
        "",
        "```python",
        "import mlflow, pandas as pd",
        f'model = mlflow.pyfunc.load_model("models:/{model}@{alias}")',
        f'x = model.predict(pd.DataFrame({{"n": [1000], "seed": [0]}}))  # float32 array of shape (n, {", ".join(map(str, shape))})',
        "```",
        f"`n` (int, 1 ≤ n ≤ {max_n:,} per call; raise with `load_model(uri, model_config={{'max_n': N}})`) and "
        "`seed` (int): the same seed gives the same samples.",
    ])
