"""The fast paths compute what the plain ones would: streamed features and the mirrored images' features
(from shared decodes), fine-tuning on cached frozen activations, and features split across two replicas."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from pipeline.config import FinetuneConfig
from pipeline.data.manifest import read_manifest, split_rows
from pipeline.layout import SPLITS
from pipeline.model.backbone import conv_base, preprocess
from pipeline.model.features import MIRRORED_SPLITS, feature_file, load_features
from pipeline.model.inputs import image_dataset
from pipeline.stages.extract import extract
from pipeline.stages.prepare import prepare
from pipeline.stages.train_dense import train_dense
from pipeline.stages.train_finetune import train_finetune
from tests.helpers import REPO
from tests.helpers.images import make_dataset
from tests.helpers.params import tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast")
    make_dataset(tmp / "raw", per_class=13, layout="flat")  # 26 images: every split ends in a partial batch
    cfg = tiny_config({"extract": {"batch_size": 4}})
    prepare(tmp / "raw", tmp / "prepared", tmp / "prepare.json", cfg.split, processes=1)
    extract(tmp / "prepared" / "manifest.csv", tmp / "features", cfg.backbone, cfg.extract)
    return tmp, cfg


def test_streamed_features_equal_the_conv_base_on_each_image(tiny):
    tmp, cfg = tiny
    base = conv_base(cfg.backbone)
    rows = read_manifest(tmp / "prepared" / "manifest.csv")
    for split, flip in [(s, False) for s in SPLITS] + [(s, True) for s in MIRRORED_SPLITS]:
        paths = [r.path for r in split_rows(rows, split)]
        ds = image_dataset(paths, None, cfg.backbone.image_size, batch_size=32, flip=flip)
        expected = np.concatenate([base(preprocess(x), training=False).numpy() for x in ds])
        got, labels = load_features(tmp / "features", split, mirror=flip)
        assert got.shape == expected.shape and len(labels) == len(paths)
        np.testing.assert_allclose(got, expected, atol=1e-2, rtol=1e-3)  # stored as float16
    mirrors = {f.name for f in (tmp / "features").glob("*.mirror.npy")}
    assert mirrors == {feature_file(s, mirror=True) for s in MIRRORED_SPLITS}  # validation: none (nothing reads it)


def test_dense_flip_trains_on_the_mirrored_features_too(tiny, tmp_path, caplog):
    tmp, cfg = tiny
    n_train = len(load_features(tmp / "features", "train")[1])
    for flip, n in ((False, n_train), (True, 2 * n_train)):
        with caplog.at_level("INFO", logger="pipeline"):
            caplog.clear()
            train_dense(tmp / "features", tmp_path / str(flip), cfg.dense.model_copy(update={"flip": flip}))
        assert f" on {n} train" in caplog.text
    plain = tmp_path / "plain"  # a feature folder without mirrored train features: named, not guessed around
    plain.mkdir()
    for f in (tmp / "features").iterdir():
        if f.name != feature_file("train", mirror=True):
            (plain / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match="train.mirror.npy"):
        train_dense(plain, tmp_path / "none", cfg.dense.model_copy(update={"flip": True}))


def test_finetune_without_augmentation_trains_on_cached_activations_and_saves_those_weights(tiny, caplog):
    tmp, cfg = tiny
    train_dense(tmp / "features", tmp / "dense", cfg.dense)
    still = {"flip": False, "rotation": 0, "zoom": 0, "color": 0.0}
    no_aug = FinetuneConfig(**{**cfg.finetune.model_dump(), "augment": still})
    with caplog.at_level("INFO", logger="pipeline"):
        summary = train_finetune(
            tmp / "prepared" / "manifest.csv", tmp / "dense" / "model.keras", tmp / "ft", cfg.backbone, no_aug
        )
    assert "activations" in caplog.text and "cached" in caplog.text
    model = keras.models.load_model(tmp / "ft" / "model.keras")
    val = split_rows(read_manifest(tmp / "prepared" / "manifest.csv"), "validation")
    y = np.array([r.label == "dogs" for r in val], dtype=np.float32)
    p = model.predict(image_dataset([r.path for r in val], None, cfg.backbone.image_size, 8), verbose=0)[:, 0]
    loss = float(keras.losses.binary_crossentropy(y, p))
    assert loss == pytest.approx(summary.val_loss, abs=2e-3)  # the saved model is the best epoch's


TWO_REPLICAS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, sys
from pathlib import Path
from pipeline.config import BackboneConfig
from pipeline.model.backbone import conv_base
from pipeline.model.features import feature_function, stream_features
paths, out = sys.argv[1:-1], Path(sys.argv[-1])
base = conv_base(BackboneConfig(name="mobilenet", alpha=1.0, weights="imagenet", image_size=32))
for name, strategy in (("one", tf.distribute.get_strategy()),
                       ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    files = [out / f"{name}.npy", out / f"{name}.mirror.npy"]
    stream_features(feature_function(base, strategy, True), strategy, paths, files, (1, 1, 1024), 32, 4, name)
"""


def test_features_split_across_two_replicas_equal_those_of_one(tiny, tmp_path):
    tmp, _ = tiny
    paths = [r.path for r in read_manifest(tmp / "prepared" / "manifest.csv")][:11]  # last batch: 3 over 2 replicas
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TWO_REPLICAS), *paths, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for suffix in ("npy", "mirror.npy"):
        one, two = np.load(tmp_path / f"one.{suffix}"), np.load(tmp_path / f"two.{suffix}")
        assert one.shape == (11, 1, 1, 1024)
        np.testing.assert_allclose(two.astype(np.float32), one.astype(np.float32), atol=1e-2)
