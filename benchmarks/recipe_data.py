"""What benchmarks/recipes.py trains on and how it scores: the four real datasets of ../shared/mirror, and a
low-resolution twin of two, prepared and extracted once under .cache/bench/<name>/ by the pipeline's own stage
functions, and validation (or test) scores of a trained model."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO, SHARED

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from pipeline.config import Config, load_config
from pipeline.data.archive import RAW, download
from pipeline.data.manifest import classes_of, read_manifest, split_rows
from pipeline.files import atomic_path
from pipeline.layout import MODEL_FILE, DatasetLayout
from pipeline.model.features import feature_probabilities, load_features
from pipeline.model.inference import image_probabilities, load_for_inference, probabilities
from pipeline.stages.extract import extract
from pipeline.stages.prepare import prepare

WORK = REPO / ".cache" / "bench"
DATASETS = {
    "cats_and_dogs_filtered": SHARED / "mirror" / "cats_and_dogs_filtered.zip",
    "hymenoptera_data": SHARED / "mirror" / "hymenoptera_data.zip",
    # Far from ImageNet (#25): 150 px scenes in six classes (train/ + val/), and greyscale chest X-rays (flat
    # class folders, which prepare splits itself).
    "intel_scenes": SHARED / "mirror" / "intel_scenes.zip",
    "chest_xray_pneumonia": SHARED / "mirror" / "chest_xray_pneumonia.zip",
}
# Low-resolution twins (the same images and splits, short side LOW_RES px, upscaled again by the backbone's
# resize): how a dataset of small photos looks to the pipeline, for recipes that must also work there.
LOW_RES = 40
TWINS = {f"{name}_lowres": name for name in ("cats_and_dogs_filtered", "hymenoptera_data")}


def _low_res(src: Path, dest: Path) -> None:
    """Each file of `src` in the same place under `dest`, an image shrunk to a LOW_RES px short side (bicubic,
    JPEG quality 90); what is no image is copied, so prepare quarantines it as in the original."""
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
        except OSError:
            shutil.copy(path, out)
            continue
        scale = LOW_RES / min(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb.resize(size, Image.Resampling.BICUBIC).save(out, format="JPEG", quality=90)


@dataclass(frozen=True)
class Dataset:
    name: str
    cfg: Config  # params.yaml with this dataset's data section
    layout: DatasetLayout

    def labels(self, split: str) -> np.ndarray:
        return load_features(self.layout.features, split)[1]

    def paths(self, split: str) -> list[str]:
        return [r.path for r in split_rows(read_manifest(self.layout.manifest), split)]

    def tta(self, split: str) -> bool:
        """Whether a split is scored flip-averaged: the test split, as evaluate scores it (evaluate.tta_flip)."""
        return split == "test" and self.cfg.evaluate.tta_flip

    @property
    def classes(self) -> list[str]:
        return classes_of(read_manifest(self.layout.manifest))


def _config(name: str) -> Config:
    """params.yaml with `name`'s data section: its archive in ../shared, or (a twin) its shrunk folder."""
    base = load_config(REPO / "params.yaml")
    url = str(DATASETS.get(name) or DatasetLayout.of(name, WORK).raw)
    return base.model_copy(update={"data": base.data.model_copy(update={"name": name, "url": url})})


def _raw(name: str) -> Path:
    """`name`'s raw folder under WORK: downloaded, or a twin shrunk from its original's raw folder (only that:
    the original is not prepared or extracted for it). Written whole or not at all."""
    raw = DatasetLayout.of(name, WORK).raw
    if not raw.exists():
        with atomic_path(raw, RAW) as tmp:
            if name in TWINS:
                _low_res(_raw(TWINS[name]), tmp)
            else:
                download(_config(name).data, tmp)
    return raw


def dataset(name: str) -> Dataset:
    """Downloaded (from ../shared) or shrunk from its original (a twin), prepared and extracted with params.yaml's
    split, backbone and extract keys."""
    cfg = _config(name)
    layout = DatasetLayout.of(name, WORK)
    if not (layout.features / "meta.json").exists():
        start = time.perf_counter()
        _raw(name)
        prepare(layout.raw, layout.prepared, layout.prepare_summary, cfg.split)
        extract(layout.manifest, layout.features, cfg.backbone, cfg.extract)
        print(f"{name}: prepared and extracted in {time.perf_counter() - start:.0f} s", flush=True)
    return Dataset(name, cfg, layout)


def scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and log loss (the plain one: label smoothing would make heads' val_loss incomparable)."""
    return {
        "accuracy": float(accuracy_score(y, probs.argmax(1))),
        "log_loss": float(log_loss(y, np.clip(probs, 1e-7, 1), labels=list(range(probs.shape[1])))),
    }


def dense_scores(ds: Dataset, model_dir: Path, split: str) -> dict[str, float]:
    """The dense head on the split's cached features; on test, flip-averaged as evaluate does."""
    head, n = load_for_inference(model_dir / MODEL_FILE), len(ds.classes)
    p, y = feature_probabilities(lambda x: probabilities(head, x, n), ds.layout.features, split, ds.tta(split))
    return scores(y, p)


def finetune_scores(ds: Dataset, model_dir: Path, split: str) -> dict[str, float]:
    """The fine-tuned model on the split's images (flip-averaged on test, as evaluate does)."""
    model = load_for_inference(model_dir / MODEL_FILE)
    p = image_probabilities(model, ds.paths(split), len(ds.classes), ds.cfg.backbone.image_size, ds.tta(split))
    return scores(ds.labels(split), p)


def baseline_scores(ds: Dataset, split: str) -> dict[str, float]:
    """The baseline to beat: scikit-learn's logistic regression on global-average-pooled features."""
    x, y = load_features(ds.layout.features, "train")
    model = LogisticRegression(max_iter=5000).fit(x.mean(axis=(1, 2)), y)

    def pooled(features: np.ndarray) -> np.ndarray:
        return model.predict_proba(features.mean(axis=(1, 2)))

    p, y_eval = feature_probabilities(pooled, ds.layout.features, split, ds.tta(split))
    return scores(y_eval, p)
