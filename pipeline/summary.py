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
from pipeline.contracts import Metrics, PrepareSummary, TrackRecord, TrainingSummary
from pipeline.layout import HEADS, SHIPPING_HEAD, SPLITS, SUMMARY_FILE, DatasetLayout

WIDTH = 100


def _cell(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_lines(layout: DatasetLayout, name: str) -> list[str]:
    metrics, prepared = Metrics.load(layout.metrics), PrepareSummary.load(layout.prepare_summary)
    splits = " / ".join(f"{prepared.per_split[s]:,} {s}" for s in SPLITS)
    lines = [f"{name}: {len(prepared.classes)} classes, {splits} images, {prepared.quarantined} quarantined"]
    lines.append(
        f"{'head':<10}{'test acc':>10}{'F1':>8}{'macro F1':>10}{'ROC-AUC':>9}{'best epoch':>12}{'val loss':>10}"
    )
    for head in HEADS:
        m, s = metrics[head], TrainingSummary.load(layout.model_dir(head) / SUMMARY_FILE)
        lines.append(
            f"{head:<10}{_cell(m.accuracy, '>10.2%')}{_cell(m.f1, '>8.3f')}{_cell(m.macro_f1, '>10.3f')}"
            f"{_cell(m.roc_auc, '>9.4f')}{_cell(s.best_epoch, '>12')}{_cell(s.val_loss, '>10.4f')}"
        )
    shipped = TrainingSummary.load(layout.model_dir(SHIPPING_HEAD) / SUMMARY_FILE).shipped_line()
    lines += textwrap.wrap(f"shipped: {shipped}", WIDTH, subsequent_indent=" " * 9)
    lines.append(f"report:  {layout.report}")
    if layout.mlflow_record.is_file():
        record = TrackRecord.load(layout.mlflow_record)
        champion = record.champion.shipped if record.champion else "-"
        lines.append(f"mlflow:  experiment {record.experiment_name!r}, parent run {record.parent_run_id}")
        lines.append(f"         {record.tracking_uri}; champion: {champion}")
    return [line if len(line) <= WIDTH else line[: WIDTH - 1] + "…" for line in lines]


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, dataset_default="every dataset").parse_args(argv)
    if args.dataset:
        names = [load_config(args.params, args.dataset).data.name]
    else:
        names = [cfg.data.name for cfg in parse_all(load_params(args.params), str(args.params))]
    blocks = []
    for name in names:
        layout = DatasetLayout.of(name)
        lines = summary_lines(layout, name) if layout.metrics.is_file() else [f"{name}: not built yet (dvc repro)"]
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))


if __name__ == "__main__":
    run_cli(main)
