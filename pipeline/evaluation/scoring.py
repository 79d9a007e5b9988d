"""Scoring predictions: metrics.json and the plots, the same for the test split and any other labelled folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.contracts import Metrics, TrainingSummary
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.plots import write_plots
from pipeline.files import log
from pipeline.layout import METRICS_FILE


def score(
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    classes: list[str],
    out_dir: Path,
    histories: dict[str, Path],
    summaries: dict[str, TrainingSummary],
) -> Metrics:
    """Metrics of each head's probabilities against labels `y`, written to out_dir/metrics.json with the plots
    (training curves from `histories`, head -> history.csv, where given, marked with its summary's best epoch)."""
    metrics = Metrics({head: classification_metrics(y, p, classes) for head, p in probs.items()})
    write_plots(out_dir, y, probs, classes, histories, summaries)
    metrics.save(out_dir / METRICS_FILE)
    for head, m in metrics.root.items():
        log.info("%s on %d images: accuracy %.4f, f1 %.4f", head, len(y), m.accuracy, m.f1)
    log.info("metrics -> %s, plots -> %s", out_dir / METRICS_FILE, out_dir / "plots")
    return metrics
