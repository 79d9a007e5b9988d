"""What the last run produced, in a table that fits a 100-column terminal (`make pipeline` ends with it).

    python -m pipeline.summary                  # every dataset of params.yaml, one block each
    python -m pipeline.summary --dataset cats_and_dogs_filtered

Both heads' test metrics (flip-averaged when evaluate.tta_flip is on) beside the validation loss of the epoch each
model keeps, then where the report and the MLflow runs are. `dvc metrics show` has every number (README).
"""

from __future__ import annotations

import textwrap

from pipeline.cli import parser, run_cli
from pipeline.config import load_config, load_params, parse_all
from pipeline.files import read_json
from pipeline.layout import CANDIDATES, HEADS, SHIPPING_HEAD, SPLITS, SUMMARY_FILE, DatasetLayout

WIDTH = 100


def _cell(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def shipped_line(summary: dict) -> str:
    """What the fine-tune stage's folder holds (its summary.json) and why, in one line."""
    if "shipped" not in summary:
        return "the fine-tuned model (saved before the choice among candidates existed)"
    found = summary["candidates"]
    losses = ", ".join(f"{c} {found[c]['val_loss']:.4f}" for c in CANDIDATES if c in found)
    return (
        f"{summary['shipped']} (validation log loss {losses}); fine-tuning ran {summary['epochs_run']} epoch(s), "
        f"best epoch {summary['best_epoch']}"
    )


def summary_lines(data: DatasetLayout, name: str) -> list[str]:
    metrics = read_json(data.metrics)
    prepared = read_json(data.prepare_summary)
    splits = " / ".join(f"{prepared['per_split'][s]:,} {s}" for s in SPLITS)
    lines = [f"{name}: {len(prepared['classes'])} classes, {splits} images, {prepared['quarantined']} quarantined"]
    lines.append(
        f"{'head':<10}{'test acc':>10}{'F1':>8}{'macro F1':>10}{'ROC-AUC':>9}{'best epoch':>12}{'val loss':>10}"
    )
    for head in HEADS:
        m, s = metrics[head], read_json(data.model_dir(head) / SUMMARY_FILE)
        lines.append(
            f"{head:<10}{_cell(m['accuracy'], '>10.2%')}{_cell(m['f1'], '>8.3f')}{_cell(m['macro_f1'], '>10.3f')}"
            f"{_cell(m.get('roc_auc'), '>9.4f')}{_cell(s['best_epoch'], '>12')}{_cell(s['val_loss'], '>10.4f')}"
        )
    shipped = shipped_line(read_json(data.model_dir(SHIPPING_HEAD) / SUMMARY_FILE))
    lines += textwrap.wrap(f"shipped: {shipped}", WIDTH, subsequent_indent=" " * 9)
    lines.append(f"report:  {data.report}")
    if data.mlflow_record.is_file():
        record = read_json(data.mlflow_record)
        champion = record.get("champion") or {}
        lines.append(f"mlflow:  experiment {record['experiment_name']!r}, parent run {record['parent_run_id']}")
        lines.append(f"         {record['tracking_uri']}; champion: {champion.get('shipped', '-')}")
    return [line if len(line) <= WIDTH else line[: WIDTH - 1] + "…" for line in lines]


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, dataset_default="every dataset").parse_args(argv)
    if args.dataset:
        names = [load_config(args.params, args.dataset).data.name]
    else:
        names = [cfg.data.name for cfg in parse_all(load_params(args.params), str(args.params))]
    blocks = []
    for name in names:
        data = DatasetLayout.of(name)
        lines = summary_lines(data, name) if data.metrics.is_file() else [f"{name}: not built yet (dvc repro)"]
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))


if __name__ == "__main__":
    run_cli(main)
