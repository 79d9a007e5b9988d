"""One typed view of params.yaml, validated once before any work starts.

No key has a default here: params.yaml is the one place a value is set, so a missing key is an error, not a
silent fallback to a value written in code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.layout import PARAMS_FILE


class ConfigError(ValueError):
    """A params.yaml value is missing, of the wrong type or out of range."""


# Seeds seed..seed+ensemble-1 all go to NumPy and TensorFlow, whose seeds are non-negative 32-bit integers.
SEED_MAX = 2**31 - 1


class _Strict(BaseModel):
    # strict: "0.01" (text) is not a number and "yes" is not a bool; a wrong type is a mistake worth naming.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    url: str = Field(min_length=1)
    sha256: str | None = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size: int | None = Field(gt=0)
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
    def _leaves_training_data(cls, test: float, info) -> float:
        if test + info.data.get("validation", 0) >= 1:
            raise ValueError("split.validation + split.test must be below 1")
        return test


class BackboneConfig(_Strict):
    name: Literal["mobilenet"]
    alpha: Literal[0.25, 0.5, 0.75, 1.0]
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
    def _warmup_within_epochs(self):
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
    def _seeds_in_range(self):
        if self.seed + self.ensemble - 1 > SEED_MAX:
            raise ValueError(
                f"seed + ensemble - 1 must be at most {SEED_MAX} (each ensemble member takes the next seed)"
            )
        return self


class AugmentConfig(_Strict):
    flip: bool
    rotation: float = Field(ge=0, le=0.5)
    zoom: float = Field(ge=0, lt=1)


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


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        allowed = e.get("ctx", {}).get("expected")
        hint = f" (allowed: {allowed})" if allowed else ""
        if e["type"] in ("float_type", "int_type") and isinstance(e["input"], str):
            hint = " (quoted text is not a number; YAML also reads 1e-3 as text: write 1.0e-3)"
        got = "" if e["type"] == "missing" else f", got {e['input']!r}"
        lines.append(f"  {key}: {e['msg']}{hint}{got}")
    return "\n".join(lines)


def parse_config(raw: object, source: str = "params") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; DVC refuses them, and so do we: a second partial `dense:` would
    otherwise silently drop every key of the first."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_params(path: Path) -> object:
    """params.yaml as data, refusing duplicate keys (FileNotFoundError and yaml.YAMLError pass through)."""
    return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)


def load_config(path: Path | str = PARAMS_FILE) -> Config:
    path = Path(path)
    try:
        raw = read_params(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw, str(path))
