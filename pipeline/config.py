"""One typed view of params.yaml, validated once before any work starts.

No key has a default here: params.yaml is the one place a value is set, so a missing key is an error, not a
silent fallback to a value written in code (but a dataset's sha256 / size pins: absent means null, unchecked).

Datasets live side by side under `datasets:` (dvc.yaml runs each stage once per dataset). A Config is the view
of one: `data` holds its name and source merged with the limits all share (`data:`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline.layout import PARAMS_FILE, RESERVED_NAMES
from pipeline.params_file import ConfigError, load_params

# Seeds seed..seed+ensemble-1 all go to NumPy and TensorFlow, whose seeds are non-negative 32-bit integers.
SEED_MAX = 2**31 - 1


class _Strict(BaseModel):
    # strict: "0.01" (text) is not a number and "yes" is not a bool; a wrong type is a mistake worth naming.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A folder under data/, an MLflow experiment, a DVC stage key: no dot (DVC reads datasets.<name> as a key path).
DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
NAME_MAX = 100
SOURCE_KEYS = ("url", "sha256", "size")  # a datasets.<name> entry's keys (it may also set a shared limit of data:)


class DataConfig(_Strict):
    name: str = Field(pattern=DATASET_NAME, max_length=NAME_MAX)
    url: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    size: int | None = Field(default=None, gt=0)
    max_expanded_mb: int = Field(ge=1)  # an archive that expands to more is refused before anything is written
    max_expansion_ratio: float = Field(ge=1)  # expanded size / archive size above this: refused (zip bomb)
    download_deadline_s: float = Field(gt=0)  # the whole transfer, not one read: a trickling server is cut off


class SplitConfig(_Strict):
    seed: int = Field(ge=0, le=SEED_MAX)
    test_from_validation: float = Field(gt=0, lt=1)
    validation: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @field_validator("test")
    @classmethod
    def _leaves_training_data(cls, test: float, info: ValidationInfo) -> float:
        if test + info.data.get("validation", 0) >= 1:
            raise ValueError("split.validation + split.test must be below 1")
        return test


ALPHAS = (0.25, 0.5, 0.75, 1.0)  # MobileNet v1 widths with ImageNet weights


class BackboneConfig(_Strict):
    name: Literal["mobilenet"]
    alpha: float

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, alpha: float) -> float:
        if alpha not in ALPHAS:  # a Literal of floats is valid pydantic but not a valid type for type checkers
            raise ValueError(f"Input should be {', '.join(map(str, ALPHAS))}")
        return alpha

    weights: Literal["imagenet"] | None
    image_size: int = Field(ge=32, le=1024)


class ExtractConfig(_Strict):
    batch_size: int = Field(ge=1, le=4096)
    multi_gpu: bool  # with several GPUs visible, each batch is split across them (MirroredStrategy)


class TrainingConfig(_Strict):
    """How a model is fitted: the keys both heads share."""

    optimizer: Literal["rmsprop", "adamw"]
    learning_rate: float = Field(gt=0, le=1)  # the peak rate with a schedule; `python -m pipeline.lr_find` suggests one
    weight_decay: float = Field(ge=0, lt=1)  # decoupled (AdamW-style); 0: none
    schedule: Literal["constant", "cosine"]  # cosine: linear warm-up, then cosine decay to 0 at the last epoch
    warmup_epochs: int = Field(ge=0, le=100)
    label_smoothing: float = Field(ge=0, lt=0.5)
    epochs: int = Field(ge=1, le=10000)
    patience: int | None = Field(ge=1)  # epochs without val_loss improvement before stopping; best epoch kept
    batch_size: int = Field(ge=1, le=65536)
    seed: int = Field(ge=0, le=SEED_MAX)
    class_weight: Literal["none", "balanced"]  # balanced: rare classes weigh more in the loss

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> TrainingConfig:
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        return self


class DenseConfig(TrainingConfig):
    pooling: Literal["flatten", "avg", "max", "avg_max"]  # how the 7x7 feature map becomes a vector
    units: int = Field(ge=0, le=65536)  # hidden layer width; 0: none (a linear head on the pooled features)
    activation: Literal["relu", "gelu", "tanh", "elu", "selu", "swish"] | None
    dropout: float = Field(ge=0, lt=1)
    ensemble: int = Field(ge=1, le=32)  # heads trained with seeds seed, seed+1, ...; their probabilities averaged
    flip: bool  # also train on the mirrored train images' features (extract caches them): twice the examples

    @model_validator(mode="after")
    def _seeds_in_range(self) -> DenseConfig:
        if self.seed + self.ensemble - 1 > SEED_MAX:
            raise ValueError(
                f"seed + ensemble - 1 must be at most {SEED_MAX} (each ensemble member takes the next seed)"
            )
        return self


class AugmentConfig(_Strict):
    flip: bool
    rotation: float = Field(ge=0, le=0.5)
    zoom: float = Field(ge=0, lt=1)
    color: float = Field(ge=0, lt=1)  # brightness and contrast jitter, up to this fraction either way


class FinetuneConfig(TrainingConfig):
    unfreeze_blocks: int = Field(ge=0, le=13)
    augment: AugmentConfig
    multi_gpu: bool  # with several GPUs visible, train on all of them (MirroredStrategy)


class EvaluateConfig(_Strict):
    tta_flip: bool  # average each prediction with that of the mirrored image
    explain_per_class: int = Field(ge=0, le=32)  # test images per class shown with a Grad-CAM heatmap
    misclassified_max: int = Field(ge=0, le=500)  # most confidently wrong test images in the gallery


class Config(_Strict):
    data: DataConfig
    split: SplitConfig
    backbone: BackboneConfig
    extract: ExtractConfig
    dense: DenseConfig
    finetune: FinetuneConfig
    evaluate: EvaluateConfig

    def flat(self) -> dict[str, object]:
        """`section.key` -> value, the names DVC and MLflow use for the same knobs."""
        out: dict[str, object] = {}

        def walk(prefix: str, value: object) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            else:
                out[prefix] = value

        walk("", self.model_dump())
        return out


def _describe(err: ValidationError, source: str, dataset: str = "", own: frozenset[str] = frozenset()) -> str:
    """One line per bad value; `dataset`'s `own` keys (and its name) are named where they are written:
    datasets.<name>.<key>, not data.<key>."""
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["loc"][:1] == ("data",) and len(e["loc"]) > 1 and e["loc"][1] in {"name", *SOURCE_KEYS, *own}:
            key = f"datasets.{dataset}.{key.removeprefix('data.')}"
        allowed = e.get("ctx", {}).get("expected")
        hint = f" (allowed: {allowed})" if allowed else ""
        if e["type"] in ("float_type", "int_type") and isinstance(e["input"], str):
            hint = " (quoted text is not a number)"
        if e["type"] == "bool_type" and isinstance(e["input"], str):
            hint = " (YAML 1.2, as DVC reads params: only true and false are booleans, yes/no/on/off are text)"
        got = "" if e["type"] == "missing" else f", got {e['input']!r}"
        lines.append(f"  {key}: {e['msg']}{hint}{got}")
    return "\n".join(lines)


def dataset_names(raw: object, source: str = "params") -> list[str]:
    """The keys of `datasets:`, in params.yaml's order (checked: a non-empty mapping of mappings)."""
    if not isinstance(datasets := raw.get("datasets") if isinstance(raw, dict) else None, dict) or not datasets:
        raise ConfigError(f"{source}: datasets: expected a mapping of dataset name -> {{url, sha256, size}}")
    seen: dict[str, str] = {}
    for name, entry in datasets.items():
        _check_name(name, source)
        if (twin := seen.setdefault(name.casefold(), name)) != name:  # one folder on macOS and Windows disks
            raise ConfigError(f"{source}: datasets: {twin!r} and {name!r} differ only in case: rename one")
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: datasets.{name}: expected a mapping with url (sha256, size), got {entry!r}")
    return list(datasets)


def _check_name(name: object, source: str) -> None:
    """A dataset's name becomes a folder under data/, DVC stage names and shell arguments: checked here, before
    anything builds a path or a command from it."""
    rule = f"letters, digits, '_' and '-', starting with a letter or digit, at most {NAME_MAX} characters"
    if not isinstance(name, str) or len(name) > NAME_MAX or not re.fullmatch(DATASET_NAME, name):
        raise ConfigError(f"{source}: datasets: name {name!r} is not allowed ({rule})")
    if name.casefold() in RESERVED_NAMES:
        raise ConfigError(f"{source}: datasets: name {name!r} is reserved (data/{name} is the pipeline's own folder)")


def _select(raw: dict, dataset: str | None, source: str) -> dict:
    """`raw` with `data` made the view of one dataset: `dataset`, else the default (data.name)."""
    names = dataset_names(raw, source)
    data = raw.get("data")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: data: expected a mapping (the default dataset's name and shared limits)")
    if "url" in data:
        raise ConfigError(f"{source}: data.url: a dataset's URL is datasets.<name>.url (data.name: the default one)")
    for what, name in (("data.name (the default dataset)", data.get("name")), ("--dataset", dataset or names[0])):
        if name not in names:
            raise ConfigError(
                f"{source}: {what} {name!r} is not one of datasets: {', '.join(names)} "
                f"(add one: datasets.{name}.url in params.yaml, then python -m pipeline.datasets)"
            )
    name = dataset or data["name"]
    return {k: v for k, v in raw.items() if k != "datasets"} | {"data": {**data, **raw["datasets"][name], "name": name}}


def parse_config(raw: object, source: str = "params", dataset: str | None = None) -> Config:
    """The Config of `dataset` (default: data.name)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    selected = _select(raw, dataset, source)
    name = selected["data"]["name"]
    try:
        return Config.model_validate(selected)
    except ValidationError as err:
        raise ConfigError(_describe(err, source, name, frozenset(raw["datasets"][name]))) from None


def parse_all(raw: object, source: str = "params") -> list[Config]:
    """Every dataset's Config, in params.yaml's order: each one validated."""
    return [parse_config(raw, source, name) for name in dataset_names(raw, source)]


def load_config(path: Path | str = PARAMS_FILE, dataset: str | None = None) -> Config:
    """The Config of `dataset` (default: data.name, the default dataset)."""
    return parse_config(load_params(path), str(path), dataset)
