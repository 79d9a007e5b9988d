"""Several datasets side by side in one params.yaml: each stage reads the view of one (its --dataset, else
data.name), every one is validated, and a bad or unknown name is an error naming it."""

import pytest

from pipeline.config import ConfigError, dataset_names, load_config, parse_all, parse_config
from tests.helpers.params import tiny_params, write_params


def _two() -> dict:
    params = tiny_params({"data": {"name": "cats", "url": "/data/cats.zip", "sha256": "a" * 64}})
    params["datasets"]["ants"] = {"url": "/data/ants", "size": 5}  # no sha256: left out means null
    return params


def test_each_dataset_gets_its_own_source_and_the_shared_limits(tmp_path):
    params = _two()
    cats, ants = parse_all(params)
    assert (cats.data.name, cats.data.url, cats.data.sha256, cats.data.size) == (
        "cats",
        "/data/cats.zip",
        "a" * 64,
        None,
    )
    assert (ants.data.name, ants.data.url, ants.data.sha256, ants.data.size) == ("ants", "/data/ants", None, 5)
    assert ants.data.max_expanded_mb == cats.data.max_expanded_mb == params["data"]["max_expanded_mb"]
    assert ants.dense == cats.dense  # every other section is shared
    path = write_params(tmp_path / "params.yaml", params)
    assert load_config(path).data.name == "cats"  # no --dataset: data.name, the default
    assert load_config(path, "ants").data.url == "/data/ants"
    assert dataset_names(params) == ["cats", "ants"]  # params.yaml's order


def test_a_dataset_may_set_its_own_limit():
    params = _two()
    params["datasets"]["ants"]["download_deadline_s"] = 5.0
    assert [c.data.download_deadline_s for c in parse_all(params)] == [600, 5.0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["datasets"]["ants"].update(url=""), "datasets.ants.url: String should have at least 1"),
        (lambda p: p["datasets"]["ants"].update(sha256="abc"), "datasets.ants.sha256: String should match"),
        (lambda p: p["datasets"].update({"../up": {"url": "x"}}), "datasets: name '../up' is not allowed (letters"),
        (lambda p: p["datasets"].update({"x';touch P;'": {"url": "x"}}), "name \"x';touch P;'\" is not allowed"),
        (lambda p: p["datasets"].update({"sources": {"url": "x"}}), "name 'sources' is reserved"),
        (lambda p: p["datasets"].update({"Sources": {"url": "x"}}), "name 'Sources' is reserved"),
        (lambda p: p["datasets"].update({"Cats": {"url": "x"}}), "'cats' and 'Cats' differ only in case"),
        (lambda p: p["datasets"].update({1: {"url": "x"}}), "name 1 is not allowed"),
        (lambda p: p["datasets"].update({"bad": "x.zip"}), "datasets.bad: expected a mapping with url"),
        (lambda p: p["datasets"].clear(), "datasets: expected a mapping of dataset name"),
        (lambda p: p["data"].update(name="flowers"), "data.name (the default dataset) 'flowers' is not one of"),
        (lambda p: p["data"].pop("name"), "data.name (the default dataset) None is not one of datasets: cats, ants"),
        (lambda p: p["data"].update(url="x.zip"), "data.url: a dataset's URL is datasets.<name>.url"),
    ],
)
def test_every_dataset_is_checked_and_a_bad_one_is_named(edit, message):
    params = _two()
    edit(params)
    with pytest.raises(ConfigError, match="^params: ") as err:
        parse_all(params)
    assert message in str(err.value)


def test_an_unknown_dataset_names_the_known_ones_and_how_to_add_it():
    with pytest.raises(ConfigError) as err:
        parse_config(_two(), dataset="flowers")
    assert "--dataset 'flowers' is not one of datasets: cats, ants" in str(err.value)
    assert "add one: datasets.flowers.url in params.yaml, then python -m pipeline.datasets" in str(err.value)
