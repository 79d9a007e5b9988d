"""Resumable training: after each finished epoch, everything the rest of the run depends on goes into one .npz
file beside (not inside) the stage's output: the trainable weights, the optimizer's variables, the random
generators' state (Keras SeedGenerator variables: dropout, augmentation layers), the epoch count, the history so
far and the best-epoch callback's state. A run killed mid-training and started again resumes after the last
finished epoch and ends as an uninterrupted run would (each epoch's data order is a function of the seed and the
epoch: finetune.epoch_batches). The file is keyed by a fingerprint of what determines training; another
fingerprint's file is not resumed."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.files import atomic_path, files_in, log, magic_kind, remove_stale_temps, sha256_json

CHECKPOINT_FILE = "checkpoint.npz"
# What save() may replace: a zip (.npz), whole or cut short (load() reports a damaged one and training restarts).
CHECKPOINT = magic_kind("a training checkpoint (.npz)", b"PK\x03\x04")
CHECKPOINT_FOLDER = files_in("a checkpoint folder", {CHECKPOINT_FILE: CHECKPOINT})  # the stage checks it first
SEED_STATE = "seed_generator_state"  # the name Keras gives every SeedGenerator's state variable


def fingerprint(**parts: object) -> str:
    """sha256 of `parts` as canonical JSON (configs as dicts, files as their sha256)."""
    return sha256_json(parts)


def resumable_variables(model: keras.Model) -> list:
    """What changes while `model` trains: trainable weights and random generators' state (the frozen layers'
    weights and BatchNorm statistics, in inference mode, never change)."""
    return [v for v in model.variables if v.trainable or v.name == SEED_STATE]


@dataclass(frozen=True)
class Resume:
    """A checkpoint's training state, already restored into the model and its optimizer."""

    epoch: int  # epochs finished
    history: dict[str, list[float]]
    baseline: float | None  # the starting weights' validation loss, which patience waits for an epoch to beat
    best: float
    best_epoch: int
    wait: int
    best_weights: list[np.ndarray]
    stopped: bool  # early stopping ended the run at `epoch`


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    key: str  # fingerprint of the inputs and config the training follows from

    @property
    def file(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def variant(self, tag: str) -> Checkpoint:
        """The checkpoint of one way of training (e.g. on cached activations), not resumed by another."""
        return dataclasses.replace(self, key=fingerprint(key=self.key, variant=tag))

    def load(self, model: keras.Model) -> Resume | None:
        """Restore the saved state into `model` (compiled) and its optimizer; None, logged, when there is no
        checkpoint, or one of other inputs or another model, or an unreadable one."""
        if not self.file.exists():
            return None
        try:
            with np.load(self.file, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            state = json.loads(str(arrays.pop("state")))
            key = state.pop("key")
            resume = Resume(**state, best_weights=_group(arrays, "best"))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            log.warning("checkpoint %s is unreadable (%r): not resumed, training from the start", self.file, err)
            return None
        if key != self.key:
            log.warning("checkpoint %s is of other inputs or settings: not resumed, training from the start", self.file)
            return None
        targets = {"model": resumable_variables(model), "optimizer": _built_optimizer(model).variables}
        saved = {group: _group(arrays, group) for group in targets}
        shapes = [(saved[g], vs) for g, vs in targets.items()] + [(resume.best_weights, model.weights)]
        if any([a.shape for a in values] != [tuple(v.shape) for v in variables] for values, variables in shapes):
            log.warning("checkpoint %s does not fit this model: not resumed, training from the start", self.file)
            return None
        for group, variables in targets.items():
            for variable, value in zip(variables, saved[group]):
                variable.assign(value)
        log.info("resuming from checkpoint %s after epoch %d", self.file, resume.epoch)
        return resume

    def saver(self, best: keras.callbacks.EarlyStopping, resume: Resume | None) -> keras.callbacks.Callback:
        """The callback writing the checkpoint after each epoch; it must come after `best` (whose state of that
        epoch it saves)."""
        return _Saver(self, best, resume)

    def save(self, model: keras.Model, state: dict, best_weights: list[np.ndarray]) -> None:
        """Atomically: a kill during the write leaves the previous checkpoint whole."""
        # Any: a dict[str, ndarray] unpacked into savez could, for mypy, hold its allow_pickle: bool
        arrays: dict[str, Any] = {"state": np.array(json.dumps({"key": self.key, **state}))}
        groups = {"model": resumable_variables(model), "optimizer": model.optimizer.variables, "best": best_weights}
        for group, values in groups.items():
            arrays.update({f"{group}/{i}": np.asarray(v) for i, v in enumerate(values)})
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.file, CHECKPOINT) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def remove(self) -> None:
        """Delete the checkpoint (and its folder, once empty): for a finished run. Only this module's files go."""
        if not self.folder.is_dir():
            return
        self.file.unlink(missing_ok=True)
        remove_stale_temps(self.file)
        if not any(self.folder.iterdir()):
            self.folder.rmdir()


def _built_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    """model.optimizer with its variables created, as fit would create them, so they can take saved values."""
    if not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
    return model.optimizer


def _group(arrays: dict[str, np.ndarray], group: str) -> list[np.ndarray]:
    return [arrays[f"{group}/{i}"] for i in range(sum(name.startswith(f"{group}/") for name in arrays))]


class _Saver(keras.callbacks.Callback):
    """Keeps the whole history itself: Keras's History callback runs after it and only knows this run's epochs."""

    def __init__(self, checkpoint: Checkpoint, best: keras.callbacks.EarlyStopping, resume: Resume | None):
        super().__init__()
        self.checkpoint, self.best = checkpoint, best
        self.history: dict[str, list[float]] = dict(resume.history) if resume else {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            self.history[name] = [*self.history.get(name, []), float(value)]
        best = self.best
        state = {
            "epoch": epoch + 1,
            "history": self.history,
            "baseline": best.baseline,
            "best": float(best.best),
            "best_epoch": int(best.best_epoch),
            "wait": int(best.wait),
            "stopped": bool(self.model.stop_training),
        }
        self.checkpoint.save(self.model, state, best.best_weights)  # set at the first epoch's end: BestEpoch
