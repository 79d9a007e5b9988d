"""The report's HTML pieces: table formatting (one rounding rule per kind of number) and where it was made from."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from pipeline.config import Config

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.warn{color:#b00}
figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}"""
PERCENT = {"accuracy", "precision", "recall", "f1", "macro_f1", "val_accuracy"}  # shown as 97.3%
DECIMALS = {"val_loss", "loss", "roc_auc"}  # shown with 4 decimals (an AUC is no share of anything: 0.9996)

# Where the copy of the report in the MLflow run (tracking/report_copy.py) puts the commit, date and run links.
PROVENANCE_NOTE = "Made from the inputs that this stage's entry in dvc.lock names (commit and time: the MLflow run)."


def cell(value: object, key: str = "") -> str:
    if isinstance(value, float) and key in PERCENT:
        return f"{100 * value:.1f}%"
    if isinstance(value, float) and key in DECIMALS:
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{escape(str(k))}: {cell(v)}" for k, v in value.items())
    return "" if value is None else escape(str(value))


def table(header: list[str], rows: Sequence[Sequence[object]]) -> str:
    """Each cell rounded by its column's name (PERCENT, DECIMALS)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v, k)}</td>" for k, v in zip(header, row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def provenance(cfg: Config) -> str:
    """From what it was made. No date or git commit: the report is a DVC output, and a re-run on the same inputs
    must write the same bytes (neither is a DVC dependency); the track stage's MLflow run records both."""
    b, d, f = cfg.backbone, cfg.dense, cfg.finetune
    rows = [
        ["backbone", f"{b.name} alpha {b.alpha}, {b.image_size} px, weights {b.weights}"],
        ["dense", f"pooling {d.pooling}, units {d.units}, ensemble {d.ensemble}"],
        ["finetune", f"unfreeze_blocks {f.unfreeze_blocks}, learning_rate {f.learning_rate:g}, epochs {f.epochs}"],
    ]
    flip = (
        " Test metrics average each image's prediction with its mirror's (evaluate.tta_flip)."
        if cfg.evaluate.tta_flip
        else ""
    )
    return f"<p>{PROVENANCE_NOTE}{flip}</p>" + table(["params", "values"], rows)
