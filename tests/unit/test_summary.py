"""The end-of-run summary: fits 100 columns, and its numbers are those of the committed run's files."""

import pytest

from pipeline.files import read_json
from pipeline.layout import HEADS, DatasetLayout
from pipeline.summary import WIDTH, main, summary_lines
from tests.helpers import REPO
from tests.helpers.params import repo_params, write_params


def test_summary_fits_a_terminal_and_quotes_the_metrics():
    name = repo_params()["data"]["name"]
    layout = DatasetLayout.of(name, REPO)
    lines = summary_lines(layout, name)
    assert all(len(line) <= WIDTH for line in lines)
    metrics = read_json(layout.metrics)
    for head in HEADS:
        row = next(line for line in lines if line.startswith(head))
        assert f"{metrics[head]['accuracy']:.2%}" in row and f"{metrics[head]['f1']:.3f}" in row
    assert any(str(layout.report) in line for line in lines)


def test_every_dataset_gets_a_block_and_one_not_built_says_so(tmp_path, monkeypatch, capsys):
    params = repo_params()
    name = params["data"]["name"]
    params["datasets"]["later"] = {"url": "/nowhere/later.zip"}
    write_params(tmp_path / "params.yaml", params)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).symlink_to(REPO / "data" / name)  # the committed run's files
    monkeypatch.chdir(tmp_path)
    main([])
    first, second = capsys.readouterr().out.split("\n\n")
    assert first.splitlines() == summary_lines(DatasetLayout.of(name), name)
    assert second.strip() == "later: not built yet (dvc repro)"


def test_help_says_what_no_dataset_means(capsys):
    """Without --dataset the summary prints every dataset (above): its help must say so, not data.name."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: every dataset)" in " ".join(capsys.readouterr().out.split())
