"""The tests' params: the repo's params.yaml with tiny values merged in, so every key the schema requires is
there and comes from the one file that sets it (pipeline/config.py has no defaults)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

from dvc.utils.serialize import dumps_yaml

from pipeline.config import SOURCE_KEYS, Config, ConfigError, DataConfig, load_params, parse_config
from pipeline.datasets import sync
from pipeline.layout import DATASET_LIST
from tests.helpers import REPO

# What differs from params.yaml: a 32 px backbone, small heads and batches, few epochs.
TINY = {
    "data": {
        "name": "synthetic",
        "url": "PLACEHOLDER",
        "sha256": None,
        "size": None,
        "max_expanded_mb": 20000,
        "max_expansion_ratio": 100,
        "download_deadline_s": 600,
    },
    "split": {"seed": 7, "test_from_validation": 0.5, "validation": 0.2, "test": 0.2},
    "backbone": {"name": "mobilenet", "alpha": 1.0, "weights": "imagenet", "image_size": 32},
    "extract": {"batch_size": 16},
    "dense": {
        "pooling": "flatten",  # the classic head, whose shape test_model checks; pooled heads: test_recipes.py
        "units": 16,
        "activation": "relu",
        "dropout": 0.2,
        "learning_rate": 0.01,
        "epochs": 6,
        "patience": 3,
        "batch_size": 8,
        "seed": 1,
        "ensemble": 1,  # params.yaml's ensemble is tested once, in tests/stages/test_recipes.py
    },
    "finetune": {
        "unfreeze_blocks": 1,
        "learning_rate": 1e-4,
        "epochs": 2,
        "patience": 2,
        "batch_size": 8,
        "seed": 1,
        "augment": {"flip": True, "rotation": 0.05, "zoom": 0.1, "color": 0.0},
    },
    "evaluate": {"tta_flip": True},
}


def deep_merge(base: dict, *overs: dict) -> dict:
    """A new dict: each of `overs` laid over `base` in turn, section by section (nested dicts merge)."""
    out = copy.deepcopy(base)
    for over in overs:
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def repo_params() -> dict:
    return load_params(REPO / "params.yaml")


def tiny_params(*overrides: dict) -> dict:
    """params.yaml + TINY + `overrides` (e.g. {"data": {"name": "x", "url": "x.zip"}}): a complete params dict
    with one dataset, data.name, whose source (url, sha256, size) the tests write under `data` for short and
    params.yaml keeps under `datasets.<name>` (the repo's own datasets are replaced)."""
    params = deep_merge(repo_params(), TINY, *overrides)
    data = params["data"]
    params["datasets"] = {data["name"]: {key: data.pop(key) for key in SOURCE_KEYS if key in data}}
    return params


def renamed(params: dict, name: str) -> dict:
    """`params` (of one dataset) with that dataset called `name`."""
    (source,) = params["datasets"].values()
    return {**params, "data": {**params["data"], "name": name}, "datasets": {name: copy.deepcopy(source)}}


def tiny_config(*overrides: dict) -> Config:
    return parse_config(tiny_params(*overrides))


def data_config(url: str, **keys) -> DataConfig:
    """The data section for `url` (name "s"), with e.g. sha256= / size= set."""
    return tiny_config({"data": {"name": "s", "url": url, **keys}}).data


def params_text(params: dict) -> str:
    """`params` as DVC writes a params file (PyYAML would write the text "1e-5" unquoted, which DVC and the config
    read as a number)."""
    return dumps_yaml(params)


def write_params(path: Path, params: dict) -> Path:
    """`params` written to `path` (params_text); in a DVC project (dvc.yaml beside it), its checked dataset list
    follows as `python -m pipeline.datasets` would write it, unless a name is refused (then it stays as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(params_text(params))
    if (path.parent / "dvc.yaml").is_file():
        with contextlib.suppress(ConfigError):
            sync(path, path.parent / DATASET_LIST)
    return path
