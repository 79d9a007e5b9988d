"""One self-contained HTML page per evaluation: both heads' test metrics, per-class scores, confusion matrices,
training summaries, the class balance of the data and every evaluation plot, inlined so it opens offline.

    python -m pipeline.evaluation.report --reports data/<name>/reports --dense data/<name>/models/dense \\
        --finetune data/<name>/models/finetune --prepare-summary data/<name>/prepare.json

evaluate writes it as <reports>/report.html; this command rebuilds it from the files, and names the params of
--params (default params.yaml) as those it was made with.
"""

from __future__ import annotations

import base64
import csv
import hashlib
from html import escape
from pathlib import Path

from pipeline.cli import parser, run_cli, setup_logging
from pipeline.config import Config, load_config
from pipeline.contracts import Metrics, PrepareSummary, TrainingSummary
from pipeline.data.manifest import IMBALANCE_WARNING
from pipeline.evaluation.report_html import STYLE, provenance, table
from pipeline.files import check_output, text_kind, write_text
from pipeline.layout import (
    CANDIDATES,
    HEADS,
    LOCK_FILE,
    METRIC_NAMES,
    METRICS_FILE,
    MODEL_FILE,
    QUARANTINE_FILE,
    REPORT_FILE,
    ROC_PNG,
    SPLITS,
    SUMMARY_FILE,
    SUMMARY_METRICS,
    confusion_png,
    curves_png,
    gradcam_png,
    misclassified_csv,
    misclassified_png,
)

METRICS = ("n", *METRIC_NAMES)
TITLE = ": evaluation report"  # after the dataset's name
REPORT_HTML = text_kind("an evaluation report", f"{TITLE}</title>")  # what write_report may replace
SUMMARY = (*SUMMARY_METRICS, "class_weight")
PLOT_ORDER = (
    *map(curves_png, HEADS),
    *map(confusion_png, HEADS),
    ROC_PNG,
    gradcam_png("finetune"),
    *map(misclassified_png, HEADS),
)  # then any other PNG, by name
GALLERY_LISTS = {misclassified_png(h): misclassified_csv(h) for h in HEADS}  # what _names reads


def _data_section(prepared: PrepareSummary) -> str:
    ratio, reasons = prepared.imbalance_ratio, prepared.quarantine_reasons
    note = (
        f'<p class="warn">Imbalanced: {ratio:.2f}× more train images in the largest class than in the '
        f"smallest; consider dense.class_weight / finetune.class_weight: balanced.</p>"
        if ratio > IMBALANCE_WARNING
        else f"<p>Imbalance ratio (largest / smallest train class): {ratio:.2f}</p>"
    )
    return (
        f"<h2>Data</h2><p>{prepared.images} images in {len(prepared.classes)} classes; {prepared.quarantined} "
        f"file(s) quarantined (prepared/{QUARANTINE_FILE}).</p>"
        + table(["class", *SPLITS], [[c, *(prepared.per_class[c][s] for s in SPLITS)] for c in prepared.classes])
        + note
        + (table(["quarantine reason", "files"], [[r, n] for r, n in sorted(reasons.items())]) if reasons else "")
    )


def _plots_section(plots: Path) -> str:
    files = sorted(
        plots.glob("*.png"),
        key=lambda f: (PLOT_ORDER.index(f.name) if f.name in PLOT_ORDER else len(PLOT_ORDER), f.name),
    )
    figures = [
        f'<figure><img alt="{escape(f.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(f.read_bytes()).decode("ascii")}"><figcaption>{escape(f.name)}{_names(f)}</figcaption>'
        "</figure>"
        for f in files
    ]
    return "<h2>Plots</h2>" + "".join(figures)


def _names(png: Path) -> str:
    """The gallery's images, in its order, from the CSV that explain.py writes beside it."""
    listing = png.with_name(GALLERY_LISTS[png.name]) if png.name in GALLERY_LISTS else None
    if listing is None or not listing.exists():
        return ""
    with listing.open(newline="") as f:
        rows = list(csv.DictReader(f))
    items = "".join(
        f"<li><code>{escape(r['file'])}</code>: {escape(r['true'])} → {escape(r['predicted'])} "
        f"{100 * float(r['confidence']):.1f}%</li>"
        for r in rows
    )
    return f'<ol class="names">{items}</ol>' if rows else ""


def _metrics_note(classes: list[str]) -> tuple[tuple[str, ...], str]:
    """The test metrics' columns and what they are: on N classes `f1` is `macro_f1` again, so it is left out."""
    if len(classes) == 2:
        return METRICS, f"<p>precision, recall and f1: of the class {escape(classes[1])}.</p>"
    return tuple(k for k in METRICS if k != "f1"), "<p>precision and recall: macro averages over the classes.</p>"


def _training_section(summaries: dict[str, TrainingSummary]) -> str:
    rows = [[h, *(getattr(s, k) for k in SUMMARY_METRICS), s.class_weight or "none"] for h, s in summaries.items()]
    return "<h2>Training (validation split)</h2>" + table(["head", *SUMMARY], rows) + _shipped(summaries)


def _shipped(summaries: dict[str, TrainingSummary]) -> str:
    """Which model the fine-tune stage ships (predict's default, @champion) and the candidates it chose among."""
    s = next((s for s in summaries.values() if s.shipped is not None), None)
    if s is None or s.shipped is None or s.candidates is None:
        return ""
    found = s.candidates  # summary.json keeps keys sorted: CANDIDATES gives the order of cost
    rows = [[c, found[c].val_loss, found[c].val_accuracy] for c in CANDIDATES if c in found]
    return (
        f"<p>Shipped (predict's default, <code>@champion</code>): <b>{escape(s.shipped)}</b>, the candidate of "
        f"lowest validation log loss (a tie goes to the cheaper, in this order: {', '.join(CANDIDATES)}). "
        f"Fine-tuning ran {s.epochs_run} epoch(s); its best was epoch {s.best_epoch}.</p>"
        + table(["candidate", "val_loss", "val_accuracy"], rows)
    )


def _models_note(model_dirs: dict[str, Path]) -> str:
    """The models' md5s, as dvc.lock records them: the page carries no date or commit (a re-run on the same inputs
    writes the same bytes), but the commit that first recorded these models gives both."""
    md5s = {h: hashlib.md5((d / MODEL_FILE).read_bytes()).hexdigest() for h, d in model_dirs.items()}
    if not md5s:
        return ""
    listed = ", ".join(f"{escape(h)} <code>{m}</code>" for h, m in md5s.items())
    first = next(iter(md5s.values()))
    return (
        f"<p>Models (md5, as {LOCK_FILE} records them): {listed}. Their commit and date: "
        f"<code>git log -S {first} -- {LOCK_FILE}</code>.</p>"
    )


def render(
    reports: Path,
    metrics: Metrics,
    summaries: dict[str, TrainingSummary],
    model_dirs: dict[str, Path],
    cfg: Config,
    prepared: PrepareSummary | None = None,
    title: str | None = None,
) -> str:
    """The page on `metrics` and the plots under `reports`, with the heads' `summaries` and the `model_dirs`'
    models' md5s; `prepared`: the data section. `title`: the dataset's name (default: cfg's data.name)."""
    title = title or cfg.data.name
    heads = list(metrics.root)
    classes = list(metrics[heads[0]].per_class)
    parts = [
        f"<h1>{escape(title)}{TITLE}</h1>",
        provenance(cfg),
        _models_note({h: d for h, d in model_dirs.items() if (d / MODEL_FILE).exists()}),
        f"<p>Classes: {escape(', '.join(classes))}. Both heads scored on the same held-out images.</p>",
    ]
    if prepared:
        parts.append(_data_section(prepared))
    columns, note = _metrics_note(classes)
    parts += [
        "<h2>Test metrics</h2>",
        table(["head", *columns], [[h, *(getattr(metrics[h], k) for k in columns)] for h in heads]),
        note,
    ]
    for h in heads:
        per = metrics[h].per_class
        parts += [
            f"<h3>{escape(h)}: per class</h3>",
            table(
                ["class", "precision", "recall", "f1", "support"],
                [[c, *(getattr(per[c], k) for k in ("precision", "recall", "f1", "support"))] for c in classes],
            ),
            f"<h3>{escape(h)}: confusion matrix (rows: true, columns: predicted)</h3>",
            table(["", *classes], [[c, *row] for c, row in zip(classes, metrics[h].confusion_matrix)]),
        ]
    if summaries:
        parts.append(_training_section(summaries))
    if (reports / "plots").is_dir():
        parts.append(_plots_section(reports / "plots"))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}{TITLE}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_report(
    reports: Path,
    metrics: Metrics,
    summaries: dict[str, TrainingSummary],
    model_dirs: dict[str, Path],
    cfg: Config,
    prepared: PrepareSummary | None = None,
    title: str | None = None,
) -> Path:
    """reports/report.html: render's page."""
    out = reports / REPORT_FILE
    write_text(out, render(reports, metrics, summaries, model_dirs, cfg, prepared, title), REPORT_HTML)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--reports", type=Path, required=True, help="evaluate's output folder (metrics.json, plots/)")
    ap.add_argument("--dense", type=Path, help="train_dense output folder (summary.json)")
    ap.add_argument("--finetune", type=Path, help="train_finetune output folder (summary.json)")
    ap.add_argument("--prepare-summary", type=Path, help="prepare's summary JSON (class counts, quarantine)")
    args = ap.parse_args(argv)
    setup_logging()
    check_output(args.reports / REPORT_FILE, REPORT_HTML)
    model_dirs = {h: d for h, d in zip(HEADS, (args.dense, args.finetune)) if d}
    summaries = {
        h: TrainingSummary.load(d / SUMMARY_FILE) for h, d in model_dirs.items() if (d / SUMMARY_FILE).exists()
    }
    prepared = PrepareSummary.load(args.prepare_summary) if args.prepare_summary else None
    metrics = Metrics.load(args.reports / METRICS_FILE)
    cfg = load_config(args.params, args.dataset)
    print(write_report(args.reports, metrics, summaries, model_dirs, cfg, prepared))


if __name__ == "__main__":
    run_cli(main, FileNotFoundError)
