"""Fault suite, preemptible workers: fine-tuning killed (kill -9) mid-run and run again resumes from its
per-epoch checkpoint and ends with the model, history and summary of an uninterrupted run; a checkpoint of other
inputs, or a damaged one, is not resumed; a finished run leaves no checkpoint."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.model.checkpoint import CHECKPOINT_FILE, Checkpoint
from pipeline.model.finetune import flip_dataset
from pipeline.model.inputs import array_batches
from pipeline.model.training import fit_from_start
from pipeline.stages.extract import extract
from pipeline.stages.prepare import prepare
from pipeline.stages.train_dense import train_dense
from pipeline.stages.train_finetune import train_finetune
from tests.helpers.images import make_dataset
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env, kill_when, start

EPOCHS = 8
# Both ways of fine-tuning: every image through the whole model with in-model augmentation (rotation, zoom, colour:
# seeded layers), and the top blocks on cached frozen activations with stateless flips.
AUGMENT = {
    "images": {"flip": True, "rotation": 0.05, "zoom": 0.1, "color": 0.2},
    "cached": {"flip": True, "rotation": 0.0, "zoom": 0.0, "color": 0.0},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A prepared tiny dataset, its features and a trained dense head."""
    tmp = tmp_path_factory.mktemp("resume")
    cfg = load_config(write_params(tmp / "params.yaml", tiny_params()))
    make_dataset(tmp / "raw", per_class=20, layout="flat")
    prepare(tmp / "raw", tmp / "prepared", tmp / "prepare.json", cfg.split, processes=1)
    extract(tmp / "prepared" / "manifest.csv", tmp / "features", cfg.backbone, cfg.extract)
    train_dense(tmp / "features", tmp / "dense", cfg.dense)
    return tmp


def _params(tmp, way: str, **finetune):
    """Several epochs, no early stop (dropout in the head, so the random generators' state matters)."""
    over = {"epochs": EPOCHS, "patience": None, "augment": AUGMENT[way], **finetune}
    return write_params(tmp / f"{way}-{len(finetune)}.yaml", tiny_params({"finetune": over}))


def _command(tmp, params, out, checkpoint):
    return [
        *(sys.executable, "-m", "pipeline.stages.train_finetune", "--params", str(params)),
        *("--manifest", str(tmp / "prepared" / "manifest.csv"), "--dense-model", str(tmp / "dense" / "model.keras")),
        *("--out", str(out), "--execution", str(out.parent / f"{out.name}.execution.json")),
        *("--checkpoint", str(checkpoint)),
    ]


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _history(out):
    with open(out / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _finetune(tmp, params, out, checkpoint) -> dict:
    """The stage's work in this process (no start-up to pay): the uninterrupted runs."""
    cfg = load_config(params)
    manifest, dense = tmp / "prepared" / "manifest.csv", tmp / "dense" / "model.keras"
    return train_finetune(manifest, dense, out, cfg.backbone, cfg.finetune, checkpoint)


@pytest.fixture(scope="module")
def killed(trained):
    """way -> (epochs finished, a copy of the checkpoint) of the stage's CLI killed -9 once its checkpoint holds
    a finished epoch, before the last; each way run once."""
    done = {}

    def kill(way: str) -> tuple[int, Path]:
        if way not in done:
            checkpoint, log = trained / "checkpoints" / f"{way}-killed", trained / f"{way}-killed.log"
            out = trained / f"{way}-killed"
            proc = start(_command(trained, _params(trained, way), out, checkpoint), trained, log)
            assert kill_when(proc, lambda: (checkpoint / CHECKPOINT_FILE).exists()), (
                "ended unkilled: " + log.read_text()
            )
            assert not (out / "model.keras").exists()  # nothing partial where the next stage looks
            with np.load(checkpoint / CHECKPOINT_FILE) as npz:
                epoch = json.loads(str(npz["state"]))["epoch"]
            assert 1 <= epoch < EPOCHS, log.read_text()[-3000:]
            done[way] = epoch, checkpoint
        return done[way]

    return kill


@pytest.mark.parametrize("way", AUGMENT)
def test_killed_finetune_resumes_and_ends_as_an_uninterrupted_run(trained, killed, way):
    tmp, params = trained, _params(trained, way)
    clean, out, checkpoint = tmp / f"{way}-clean", tmp / f"{way}-resumed", tmp / "checkpoints" / way
    _finetune(tmp, params, clean, tmp / "checkpoints" / f"{way}-clean")
    assert not (tmp / "checkpoints" / f"{way}-clean").exists()  # a finished run leaves no checkpoint

    killed_after, left = killed(way)
    shutil.copytree(left, checkpoint)
    text = _run(_command(tmp, params, out, checkpoint), tmp)  # the rerun, as a worker would start it again
    assert f"after epoch {killed_after}" in text and f"Epoch {killed_after + 1}/{EPOCHS}" in text
    assert f"Epoch {killed_after}/{EPOCHS}" not in text  # the finished epochs were not trained again
    assert not checkpoint.exists()
    ref, got = _history(clean), _history(out)
    assert [r["epoch"] for r in got] == list(range(1, EPOCHS + 1))
    for r, g in zip(ref, got):
        assert g == pytest.approx(r, abs=2e-6), (r, g)
    assert json.loads((out / "summary.json").read_text()) == json.loads((clean / "summary.json").read_text())
    ref_w, got_w = (keras.models.load_model(d / "model.keras", compile=False).get_weights() for d in (clean, out))
    for r, g in zip(ref_w, got_w, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5)


def test_a_checkpoint_of_other_inputs_is_not_resumed(trained, killed, caplog):
    checkpoint = trained / "checkpoints" / "other"
    shutil.copytree(killed("cached")[1], checkpoint)
    params = _params(trained, "cached", learning_rate=2e-4)  # another setting: another training
    with caplog.at_level("INFO", logger="pipeline"):
        summary = _finetune(trained, params, trained / "other", checkpoint)
    assert "of other inputs or settings: not resumed" in caplog.text and "resuming" not in caplog.text
    assert summary.epochs_run == EPOCHS and len(_history(trained / "other")) == EPOCHS
    assert not checkpoint.exists()


def _compiled(units: int) -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(units)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_a_damaged_checkpoint_or_one_of_another_model_is_reported_and_not_resumed(tmp_path, caplog):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 cut short by a full disk")
    with caplog.at_level("INFO", logger="pipeline"):
        assert Checkpoint(tmp_path, "key").load(_compiled(1)) is None
    assert "unreadable" in caplog.text and "not resumed" in caplog.text

    other = _compiled(3)
    other.optimizer.build(other.trainable_variables)
    state = {"epoch": 1, "history": {}, "baseline": None, "best": 1.0, "best_epoch": 0, "wait": 1, "stopped": False}
    Checkpoint(tmp_path, "key").save(other, state, other.get_weights())
    with caplog.at_level("INFO", logger="pipeline"):
        assert Checkpoint(tmp_path, "key").load(_compiled(1)) is None
    assert "does not fit this model" in caplog.text
    assert Checkpoint(tmp_path, "key").load(_compiled(3)).epoch == 1  # the same checkpoint fits its own model


def test_each_epochs_batches_depend_on_seed_and_epoch_only():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)

    def epochs(first):  # (value, label) per epoch, from `first` on
        batches = list(flip_dataset(x, -x, np.arange(10), batch_size=4, seed=3, epochs=range(first, 4)))
        return [
            [(float(v), int(y)) for xb, yb in batches[e : e + 3] for v, y in zip(xb.numpy().ravel(), yb.numpy())]
            for e in range(0, len(batches), 3)  # 3 batches an epoch: 4 + 4 + 2
        ]

    run = epochs(0)
    for seen in run:
        assert sorted(y for _, y in seen) == list(range(10))  # every image once
        assert all(abs(v) == y for v, y in seen)  # its own activations, plain (+) or mirrored (-)
    flips = [[v < 0 for v, _ in sorted(seen, key=lambda s: s[1])] for seen in run]
    assert any(any(f) and not all(f) for f in flips) and flips[0] != flips[1]  # re-drawn each epoch
    assert [y for _, y in run[0]] != [y for _, y in run[1]]  # reshuffled each epoch
    assert epochs(2) == run[2:]  # a run resumed at epoch 2 sees what an uninterrupted one sees there


def _early_stopped_fit(folder, epochs_left):
    """A small head (dropout included) fitted with a checkpoint; validation labels are the training labels
    flipped, so no epoch beats the start and patience 1 stops the run after two epochs (Keras never stops after
    the first); the resumed run must wait for the same start's loss."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 2, 32).astype(np.float32)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.AdamW(0.05), loss="binary_crossentropy", metrics=["accuracy"])
    val = array_batches(x, 1 - y, 8)
    return model, fit_from_start(
        model,
        lambda first: flip_dataset(x, None, y, 8, 1, range(first, epochs_left)),
        val,
        patience=1,
        checkpoint=Checkpoint(folder, "key"),
        epochs=epochs_left,
        steps_per_epoch=4,
        verbose=0,
        beat_start=True,
    )


def test_a_run_killed_after_it_stopped_early_resumes_to_the_same_end(tmp_path, caplog):
    first, history = _early_stopped_fit(tmp_path, 10)
    assert len(history.history["val_loss"]) == 2  # stopped: no epoch beat the start
    assert (tmp_path / CHECKPOINT_FILE).exists()  # as a kill before the model was saved would leave it
    with caplog.at_level("INFO", logger="pipeline"):
        again, rerun = _early_stopped_fit(tmp_path, 10)
    assert "after epoch 2" in caplog.text
    assert rerun.history == history.history
    for r, g in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(g, r)
