"""Evaluation plots: PNGs for people and MLflow, CSVs for `dvc plots show`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, roc_curve  # noqa: E402

from pipeline.contracts import TrainingSummary  # noqa: E402
from pipeline.files import atomic_path, magic_kind, write_csv  # noqa: E402
from pipeline.layout import ROC_PNG, confusion_png, curves_png, predictions_csv, roc_csv  # noqa: E402

PNG = magic_kind("a PNG image", b"\x89PNG\r\n\x1a\n")  # what save_figure may replace


def save_figure(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path, PNG) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_plots(
    out_dir: Path,
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    classes: list[str],
    histories: dict[str, Path],
    summaries: dict[str, TrainingSummary],
) -> list[Path]:
    """Confusion matrices, ROC curves (binary) and training curves under out_dir/plots/ (a head's curves from its
    history.csv in `histories`, the kept epoch marked where `summaries` has it)."""
    plots = out_dir / "plots"
    written = []
    for head, p in probs.items():
        pred = p.argmax(axis=1)
        write_csv(
            plots / predictions_csv(head),
            ["actual", "predicted"],
            [(classes[a], classes[b]) for a, b in zip(y, pred)],
        )
        fig, ax = plt.subplots(figsize=(4 + len(classes) * 0.4, 4 + len(classes) * 0.4))
        ConfusionMatrixDisplay.from_predictions(
            y, pred, labels=list(range(len(classes))), display_labels=classes, ax=ax, colorbar=False, xticks_rotation=45
        )
        ax.set_title(f"{head}: confusion matrix (test)")
        save_figure(fig, plots / confusion_png(head))
        written.append(plots / confusion_png(head))
    if len(classes) == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        for head, p in probs.items():
            fpr, tpr, _ = roc_curve(y, p[:, 1])
            write_csv(plots / roc_csv(head), ["fpr", "tpr"], zip(fpr.round(6), tpr.round(6)))
            ax.plot(fpr, tpr, label=head)
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        ax.legend()
        save_figure(fig, plots / ROC_PNG)
        written.append(plots / ROC_PNG)
    for head, path in histories.items():
        hist = np.genfromtxt(path, delimiter=",", names=True)
        hist = np.atleast_1d(hist)
        summary = summaries.get(head)  # the kept weights' epoch
        best, members = (summary.best_epoch, summary.members) if summary else (None, None)
        who = f" (ensemble of {members})" if members else ""  # an ensemble's rows: train_dense's docstring
        kept = f"saved: epoch {best}, each member at its best" if members else f"best epoch ({best})"
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot(hist["epoch"], hist[key], "o-", label=f"train {key}{who}")
            ax.plot(hist["epoch"], hist[f"val_{key}"], "o-", label=f"validation {key}{who}")
            if best is not None:
                ax.axvline(best, color="k", ls="--", lw=1, label=kept)
            ax.set(xlabel="epoch", title=f"{head}: {key}")
            ax.legend()
        save_figure(fig, plots / curves_png(head))
        written.append(plots / curves_png(head))
    return written
