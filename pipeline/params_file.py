"""params.yaml read as DVC reads it, by DVC's own parser (YAML 1.2, ruamel.yaml), so a stage runs with the values
DVC records and `dvc exp run -S` writes: 010 is 10, yes is text, 1e-05 a float (PyYAML, YAML 1.1, read them as 8,
True and text); a duplicate key is refused, as DVC refuses it. pipeline.config validates what this returns."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.layout import PARAMS_FILE


class ConfigError(ValueError):
    """The params file is missing or not valid YAML, or a value is missing, of the wrong type or out of range."""


def _yaml_problem(err: Exception) -> str:
    """ruamel's error in one line: what, and where (its own text adds a URL and a note on several lines)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err)
    if dup := re.match(r'found duplicate key "(.*)" with value', problem):
        return f"duplicate key {dup[1]!r}{where} (DVC refuses the file too: merge the two)"
    return f"not valid YAML{where}: {problem}"


def parse_params(text: str, source: str) -> object:
    """Params text as DVC reads it (DVC's parse_yaml); bad YAML or a duplicate key: ConfigError naming `source`
    and the line."""
    # imported here: the served model's copy of this module (pipeline/tracking/served.py) runs without DVC
    from dvc.utils.serialize import YAMLFileCorruptedError, parse_yaml

    try:
        return parse_yaml(text, source)
    except YAMLFileCorruptedError as err:
        raise ConfigError(f"{source}: {_yaml_problem(err.__cause__ or err)}") from None


def load_params(path: Path | str = PARAMS_FILE) -> object:
    """The params file as DVC reads it (parse_params); a missing or unreadable file: ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the parameters file: {err}") from None
    return parse_params(text, str(path))
