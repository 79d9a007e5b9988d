"""Per-run overrides of params.yaml: checked against the pipeline's own schema, then written into the params.yaml
of the checkout a DVC experiment is made in."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, load_params, parse_all, parse_config
from pipeline.layout import PARAMS_FILE


def _set_all(params: dict, overrides: dict[str, Any]) -> None:
    """Each dotted `section.key` of `overrides` set in `params`, in place."""
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = params
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {section} is a value, not a section")
        node[leaf] = value


def apply_overrides(params: dict, overrides: dict[str, Any]) -> dict:
    """A copy of `params` with each dotted `section.key` set to its override."""
    out = copy.deepcopy(params)
    _set_all(out, overrides)
    return out


def write_overrides(path: Path, overrides: dict[str, Any]) -> None:
    """`overrides` written into the params file at `path` (a checkout's own copy), its comments and key order
    kept: DVC's round-trip YAML, as `dvc exp run -S` writes it, so `dvc exp apply` brings no reformatted file."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(str(path)) as params:
        _set_all(params, overrides)


def _effective(root: Path, overrides: dict[str, Any]) -> tuple[object, str]:
    path = root / PARAMS_FILE
    source = f"{path} with overrides {overrides}" if overrides else str(path)
    params = load_params(path)  # not a mapping (an empty file): parse_config's ConfigError says so
    return (apply_overrides(params, overrides) if isinstance(params, dict) else params), source


def effective_config(root: Path, overrides: dict[str, Any]) -> Config:
    """The default dataset's params as this run sees them; a typo or out-of-range override fails before any
    stage starts."""
    return parse_config(*_effective(root, overrides))


def effective_configs(root: Path, overrides: dict[str, Any], dataset: str | None = None) -> list[Config]:
    """Every dataset's params as this run sees them (an override may add a dataset: datasets.<name>.url), all
    validated; only `dataset`'s when given (a name not among them: the config's ConfigError, naming them)."""
    raw, source = _effective(root, overrides)
    configs = parse_all(raw, source)
    return [parse_config(raw, source, dataset)] if dataset else configs


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (1e-4, 64, true, null), else the plain string (relu)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    if not grid or not all(isinstance(values, list) and values for values in grid.values()):
        raise ConfigError(f"the grid needs at least one key, each with a non-empty list of values: {grid}")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def head_settings(root: Path, grid: dict[str, list[Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(data.name, every setting of `grid`) for a head-only sweep: dense.* keys only, each setting checked
    against the schema before anything runs (other keys change the cached features or not the dense head)."""
    settings = expand_grid(grid)
    if others := sorted({key for s in settings for key in s if not key.startswith("dense.")}):
        raise ConfigError(
            f"a head-only sweep varies dense.* values only, not {others}: other keys either change "
            f"the cached features or do not affect the dense head; use the pipeline flow's overrides"
        )
    return {effective_config(root, s).data.name for s in settings}.pop(), settings
