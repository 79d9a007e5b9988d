"""Deterministic, stratified train / validation / test assignment: depends only on the seed and the paths."""

from __future__ import annotations

from collections import defaultdict

from pipeline.config import SplitConfig
from pipeline.data.dataset import path_key


def assign_splits(items: list[tuple[str, str, str | None]], cfg: SplitConfig) -> dict[str, str]:
    """Map each (relative path, class, given split or None) to a split, carving what the layout lacks:
    both validation and test from a flat layout, test from a given validation split, validation (and test)
    from a given train split."""
    given = {s for _, _, s in items if s}
    by_class: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for rel, label, split in items:
        by_class[(label, split)].append(rel)
    out: dict[str, str] = {}
    for (_label, split), rels in sorted(by_class.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        rels.sort(key=lambda r: path_key(cfg.seed, r))
        n = len(rels)
        if split is None:  # flat layout: carve both
            n_test, n_val = round(n * cfg.test), round(n * cfg.validation)
            parts = [("test", n_test), ("validation", n_val)]
        elif split == "validation" and "test" not in given:
            parts = [("test", round(n * cfg.test_from_validation))]
        elif split == "train" and "validation" not in given:
            parts = [("validation", round(n * cfg.validation))]
            if "test" not in given:
                parts.append(("test", round(n * cfg.test)))
        else:
            parts = []
        start = 0
        for name, count in parts:
            for rel in rels[start : start + count]:
                out[rel] = name
            start += count
        for rel in rels[start:]:
            out[rel] = split or "train"
    return out
