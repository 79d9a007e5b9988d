"""Do features from below MobileNet's last block transfer better far from ImageNet? On each recipe dataset
(benchmarks/recipe_data.py), logistic regression on the global-average-pooled output of the last block alone
against the same with earlier blocks' pooled outputs concatenated (each standardised), VALIDATION split only.

    python benchmarks/mid_level.py                          # every recipe dataset
    python benchmarks/mid_level.py --datasets intel_scenes

The pooled activations are computed here, once per dataset (the backbone over train + validation images).
"""

from __future__ import annotations

import argparse
import time

from common import machine

import keras
import numpy as np
from recipe_data import DATASETS, TWINS, dataset
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.preprocessing import StandardScaler

from pipeline.model.backbone import conv_base, preprocess
from pipeline.model.inputs import image_dataset

BLOCKS = (7, 9, 11, 13)
SETS = {"13 (today's features)": (13,), "11 + 13": (11, 13), "9 + 11 + 13": (9, 11, 13), "7 + 9 + 11 + 13": BLOCKS}


def pooled_blocks(ds, split: str) -> dict[int, np.ndarray]:
    """Each block's output, global-average-pooled, for the split's images (no mirroring)."""
    base = conv_base(ds.cfg.backbone)
    outs = [keras.layers.GlobalAveragePooling2D()(base.get_layer(f"conv_pw_{b}_relu").output) for b in BLOCKS]
    model = keras.Model(base.input, outs)
    batches = image_dataset(ds.paths(split), None, ds.cfg.backbone.image_size, 32)
    parts = [model(preprocess(x), training=False) for x in batches]
    return {b: np.concatenate([p[i].numpy() for p in parts]) for i, b in enumerate(BLOCKS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=[*DATASETS, *TWINS])
    args = ap.parse_args()
    print(machine(), flush=True)
    for name in args.datasets:
        ds = dataset(name)
        start = time.perf_counter()
        train, val = pooled_blocks(ds, "train"), pooled_blocks(ds, "validation")
        y, y_val = ds.labels("train"), ds.labels("validation")
        print(f"\n{name}: validation, logistic regression (pooled in {time.perf_counter() - start:.0f} s)")
        for label, blocks in SETS.items():
            x, x_val = (np.concatenate([part[b] for b in blocks], axis=1) for part in (train, val))
            scaler = StandardScaler().fit(x)
            model = LogisticRegression(max_iter=5000, C=0.1).fit(scaler.transform(x), y)
            p = model.predict_proba(scaler.transform(x_val))
            acc, loss = accuracy_score(y_val, p.argmax(1)), log_loss(y_val, p, labels=model.classes_)
            print(f"  blocks {label:24s} {x.shape[1]:5d} dims  accuracy {acc:.4f}  log loss {loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
