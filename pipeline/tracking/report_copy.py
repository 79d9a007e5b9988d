"""The report as the parent MLflow run shows it. report.html is a DVC output and must be byte-identical for the
same inputs, so it names no date, commit or run; the copy logged to MLflow says all of them: when the execution
ended, the git commit and DVC experiment, links to the parent and child runs, and which version is champion.
The DVC output itself is never touched."""

from __future__ import annotations

import datetime
import tempfile
from html import escape
from pathlib import Path

import mlflow

from pipeline.contracts import TrackRecord
from pipeline.evaluation.report_html import PROVENANCE_NOTE
from pipeline.layout import REPORT_FILE
from pipeline.links import mlflow_run_url
from pipeline.tracking.lineage import COMMIT_TAG, EXP_NAME_TAG


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """An HTML link to the run's page on a tracking server; its id and the store's URI otherwise."""
    if href := mlflow_run_url(uri, experiment_id, run_id):
        return f'<a href="{escape(href)}">{escape(run_id)}</a>'
    return f"<code>{escape(run_id)}</code> (experiment {escape(experiment_id)} in <code>{escape(uri)}</code>)"


def provenance_rows(record: TrackRecord, tags: dict[str, str], ended_ms: int | None) -> list[tuple[str, str]]:
    """(label, HTML) rows from the track stage's record (mlflow.json's content) and the runs' tags."""
    uri, experiment = record.tracking_uri, record.experiment_id
    when = "unknown (no execution records)"
    if ended_ms is not None:
        when = datetime.datetime.fromtimestamp(ended_ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    champion = record.champion
    alias = f"<code>{escape(record.registered_model)}@champion</code>"
    if champion is None:
        held = f"{alias}: none yet"
    else:
        kept = "moved here" if champion.changed else "kept"
        what = f"ships {escape(str(champion.shipped))}, validation log loss {champion.val_loss}"
        held = f"{alias}: version {champion.version} ({what}; {kept})"
    if not record.workspace:
        held += " (an execution outside the workspace moves no alias)"
    rows = [
        ("execution ended", escape(when)),
        ("git commit", f"<code>{escape(tags.get(COMMIT_TAG, 'none (not a git checkout)'))}</code>"),
        ("DVC experiment", escape(tags.get(EXP_NAME_TAG, "none (the workspace)"))),
        ("MLflow parent run", run_link(uri, experiment, record.parent_run_id)),
        *((f"MLflow run, {head}", run_link(uri, experiment, rid)) for head, rid in record.child_run_ids.items()),
        ("champion", held),
    ]
    return rows


def with_provenance(report: str, rows: list[tuple[str, str]]) -> str:
    """`report` with its provenance note replaced by `rows` as a table (added after <body> if the note is gone)."""
    table = "".join(f"<tr><th>{escape(label)}</th><td>{value}</td></tr>" for label, value in rows)
    section = f'<table class="provenance">{table}</table><p>'
    marker = f"<p>{PROVENANCE_NOTE}"
    if marker in report:
        return report.replace(marker, section, 1)
    return report.replace("<body>", f"<body>{section}</p>", 1)


def log_report_copy(report: Path, rows: list[tuple[str, str]]) -> None:
    """Log `report` with `rows` filled in to the active run, as report.html."""
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        copy = Path(tmp) / REPORT_FILE
        copy.write_text(with_provenance(report.read_text(), rows))
        mlflow.log_artifact(str(copy))
