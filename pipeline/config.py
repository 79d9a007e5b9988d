"""One typed view of params.yaml, validated once before any work starts."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A params.yaml value is missing, of the wrong type or out of range."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    url: str = Field(min_length=1)
    sha256: Optional[str] = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    size: Optional[int] = Field(default=None, gt=0)


class SplitConfig(_Strict):
    seed: int = 42
    test_from_validation: float = Field(0.5, gt=0, lt=1)
    validation: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @field_validator("test")
    @classmethod
    def _leaves_training_data(cls, test: float, info) -> float:
        if test + info.data.get("validation", 0) >= 1:
            raise ValueError("split.validation + split.test must be below 1")
        return test


class BackboneConfig(_Strict):
    name: Literal["mobilenet"] = "mobilenet"
    alpha: Literal[0.25, 0.5, 0.75, 1.0] = 1.0
    weights: Optional[Literal["imagenet"]] = "imagenet"
    image_size: int = Field(224, ge=32, le=1024)


class ExtractConfig(_Strict):
    batch_size: int = Field(32, ge=1, le=4096)
    multi_gpu: bool = True  # with several GPUs visible, each batch is split across them (MirroredStrategy)


class DenseConfig(_Strict):
    units: int = Field(256, ge=1, le=65536)
    activation: Optional[Literal["relu", "gelu", "tanh", "elu", "selu", "swish"]] = "relu"
    dropout: float = Field(0.5, ge=0, lt=1)
    learning_rate: float = Field(2e-5, gt=0, le=1)
    epochs: int = Field(30, ge=1, le=10000)
    patience: Optional[int] = Field(5, ge=1)  # epochs without val_loss improvement before stopping
    batch_size: int = Field(20, ge=1, le=65536)
    seed: int = 42
    class_weight: Literal["none", "balanced"] = "none"  # balanced: rare classes weigh more in the loss


class AugmentConfig(_Strict):
    flip: bool = True
    rotation: float = Field(0.05, ge=0, le=0.5)
    zoom: float = Field(0.1, ge=0, lt=1)


class FinetuneConfig(_Strict):
    unfreeze_blocks: int = Field(2, ge=0, le=13)
    learning_rate: float = Field(1e-5, gt=0, le=1)
    epochs: int = Field(5, ge=1, le=10000)
    patience: Optional[int] = Field(2, ge=1)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 42
    class_weight: Literal["none", "balanced"] = "none"
    augment: AugmentConfig = AugmentConfig()
    multi_gpu: bool = True  # with several GPUs visible, train on all of them (MirroredStrategy)


class EvaluateConfig(_Strict):
    tta_flip: bool = True  # average each prediction with that of the mirrored image
    explain_per_class: int = Field(4, ge=0, le=32)  # test images per class shown with a Grad-CAM heatmap
    misclassified_max: int = Field(24, ge=0, le=500)  # most confidently wrong test images in the gallery


class Config(_Strict):
    data: DataConfig
    split: SplitConfig = SplitConfig()
    backbone: BackboneConfig = BackboneConfig()
    extract: ExtractConfig = ExtractConfig()
    dense: DenseConfig = DenseConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

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


def load_config(path: Path | str = DEFAULT_PARAMS) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw, str(path))
