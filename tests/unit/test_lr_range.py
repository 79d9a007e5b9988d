"""The range test's suggestion rule on known curves, and the config's checks of the new training keys."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, parse_config
from pipeline.model.lr_range import suggest
from tests.helpers.params import tiny_params


def test_steepest_descent_before_the_minimum_and_a_tenth_of_the_minimum():
    rates = list(np.logspace(-7, 0, 100))
    logs = np.log10(rates)
    smoothed = list(2 - np.tanh((logs + 3) * 2) + np.where(logs > -1, (logs + 1) * 20, 0))  # falls fastest at 1e-3
    steepest, minimum = suggest(rates, smoothed)
    assert steepest == pytest.approx(1e-3, rel=0.2)
    assert minimum == pytest.approx(rates[int(np.argmin(smoothed))] / 10)


def test_a_curve_that_never_falls_points_at_its_lowest_loss():
    rates = list(np.logspace(-7, 0, 50))
    steepest, minimum = suggest(rates, list(np.linspace(1, 5, 50)))
    assert steepest == pytest.approx(1e-7) and minimum == pytest.approx(1e-8)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("dense", "pooling", "mean"),
        ("dense", "ensemble", 0),
        ("dense", "units", -1),
        ("finetune", "optimizer", "sgd"),
        ("dense", "label_smoothing", 0.5),
        ("dense", "schedule", "linear"),
        ("finetune", "warmup_epochs", 99),
    ],
)
def test_training_keys_are_checked(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.*{key}|warmup_epochs"):
        parse_config(tiny_params({section: {key: value}}))
