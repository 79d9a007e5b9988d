"""Classification metrics: binary (class 1 positive, ROC-AUC) and multi-class (macro, per class)."""

import numpy as np
import pytest

from pipeline.contracts import ClassMetrics
from pipeline.evaluation.metrics import classification_metrics


def test_binary_metrics():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])  # one false positive
    m = classification_metrics(y, probs, ["cats", "dogs"])
    assert m.n == 4 and m.accuracy == 0.75
    assert (m.precision, m.recall) == (pytest.approx(2 / 3), 1.0)
    assert m.confusion_matrix == [[1, 1], [0, 2]] and m.roc_auc == 1.0
    assert m.per_class["cats"] == ClassMetrics(precision=1.0, recall=0.5, f1=m.per_class["cats"].f1, support=2)
    assert m.per_class["cats"].f1 == pytest.approx(2 / 3)


def test_multiclass_metrics_and_an_absent_class():
    y = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m.accuracy == 0.75 and m.macro_f1 == pytest.approx(m.f1)
    assert list(m.per_class) == ["a", "b", "c"] and m.per_class["c"].support == 2
    assert m.roc_auc is not None
    absent = classification_metrics(np.array([0, 1, 1]), np.eye(3)[[0, 1, 1]], ["a", "b", "c"])
    assert "roc_auc" not in absent.model_dump(mode="json")  # undefined without every class among the labels
