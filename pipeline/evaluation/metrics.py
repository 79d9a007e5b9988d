"""Classification metrics with scikit-learn, the same for every head and dataset."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from pipeline.contracts import ClassMetrics, HeadMetrics


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> HeadMetrics:
    """Binary: precision/recall/F1 of classes[1] and ROC-AUC. N classes: macro averages and per-class."""
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    binary = len(classes) == 2
    avg = "binary" if binary else "macro"
    p, r, f1, _ = skm.precision_recall_fscore_support(
        y, pred, labels=labels if not binary else None, average=avg, zero_division=0
    )
    per_p, per_r, per_f, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    auc = None
    if len(np.unique(y)) == len(classes):  # AUC is undefined when a class is absent
        auc = float(
            skm.roc_auc_score(y, probs[:, 1])
            if binary
            else skm.roc_auc_score(y, probs, multi_class="ovr", labels=labels)
        )
    return HeadMetrics(
        n=int(len(y)),
        accuracy=float(skm.accuracy_score(y, pred)),
        precision=float(p),
        recall=float(r),
        f1=float(f1),
        macro_f1=float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        confusion_matrix=skm.confusion_matrix(y, pred, labels=labels).tolist(),
        per_class={
            c: ClassMetrics(
                precision=float(per_p[i]), recall=float(per_r[i]), f1=float(per_f[i]), support=int(support[i])
            )
            for i, c in enumerate(classes)
        },
        roc_auc=auc,
    )
