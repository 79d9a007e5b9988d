"""Split assignment: deterministic for a seed, stratified per class, carving only what the layout lacks."""

from collections import Counter

from pipeline.data.splits import assign_splits
from tests.helpers.params import tiny_config


def _split(items, **split):
    return assign_splits(items, tiny_config({"split": split}).split)


def test_flat_layout_carves_validation_and_test_per_class():
    items = [(f"{c}/{i}.jpg", c, None) for c in ("a", "b") for i in range(20)]
    out = _split(items, seed=1, validation=0.2, test=0.25)
    per = Counter((rel.split("/")[0], s) for rel, s in out.items())
    assert {c: (per[(c, "train")], per[(c, "validation")], per[(c, "test")]) for c in "ab"} == {
        "a": (11, 4, 5),
        "b": (11, 4, 5),
    }


def test_same_seed_same_split_other_seed_another():
    items = [(f"a/{i}.jpg", "a", None) for i in range(30)]
    assert _split(items, seed=1) == _split(list(reversed(items)), seed=1)  # input order does not matter
    assert _split(items, seed=1) != _split(items, seed=2)


def test_given_splits_are_kept_and_test_comes_from_validation():
    items = [(f"train/a/{i}.jpg", "a", "train") for i in range(6)] + [
        (f"validation/a/{i}.jpg", "a", "validation") for i in range(4)
    ]
    out = _split(items, test_from_validation=0.5)
    assert all(out[rel] == "train" for rel, _, s in items if s == "train")
    assert Counter(out[rel] for rel, _, s in items if s == "validation") == {"validation": 2, "test": 2}
    given = items + [(f"test/a/{i}.jpg", "a", "test") for i in range(3)]
    assert {rel: s for rel, _, s in given} == _split(given)  # every split given: nothing carved
