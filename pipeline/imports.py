"""The project's own import graph, read from the source (AST: nothing is imported, no TensorFlow needed).

Two users: the served model ships exactly the code its module needs (tracking/served.py), and a test checks
that each DVC stage's code deps in dvc.yaml cover what the stage imports, so editing code always re-runs the
stages that run it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.layout import PROJECT

PACKAGES = ("pipeline", "flows")


def module_file(module: str, root: Path = PROJECT) -> Path | None:
    """The source file of a dotted module name of this project (a package's __init__.py), else None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _packages_of(path: Path, root: Path) -> list[Path]:
    """The __init__.py files Python runs before `path`'s module: one per enclosing package."""
    parts = path.relative_to(root).parts[:-1]
    return [
        root.joinpath(*parts[:i], "__init__.py")
        for i in range(1, len(parts) + 1)
        if root.joinpath(*parts[:i], "__init__.py").is_file()
    ]


def local_imports(path: Path, root: Path = PROJECT) -> set[Path]:
    """Files of this project that `path` imports directly (any `import` statement, lazy ones included)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]  # `from pkg import module`
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and (file := module_file(name, root)):
                found.add(file)
    return found


def closure(path: Path, root: Path = PROJECT) -> set[Path]:
    """`path` and every project file it imports, directly or not, with the packages' __init__.py files."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo.extend((local_imports(file, root) | set(_packages_of(file, root))) - seen)
    return seen
