"""The offline plots page on a real DVC project: vega-lite plots really rendered to PNG, image plots copied."""

import shutil
import subprocess
import sys

import pytest
from dvc.utils.serialize import load_yaml
from PIL import Image

from pipeline.evaluation.offline_plots import PlotsError, main
from pipeline.layout import DVC_FILE, HEADS, PARAMS_FILE, DatasetLayout
from tests.helpers import REPO
from tests.helpers.params import tiny_params, write_params

HISTORY = REPO / "data" / "cats_and_dogs_filtered" / "models" / "dense" / "history.csv"  # committed to git
DATASETS = {"first": (30, 20), "second": (40, 10)}  # the default dataset first; each one's image plots' size
CSV_ROWS = ["0,0", "0.5,1", "1,1"]


def _write_plot_files(project, name, size):
    """Every file that dvc.yaml's top-level plots name, for dataset `name`: the CSVs with their columns, the
    images `size` pixels (so that a copied image tells whose it is)."""
    for plot in load_yaml(REPO / DVC_FILE)["plots"]:
        if isinstance(plot, str):
            path = project / plot.replace("${default_dataset}", name)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, "red").save(path)
            continue
        ((_, spec),) = plot.items()
        for csv, fields in spec["y"].items():
            path = project / csv.replace("${default_dataset}", name)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.name == HISTORY.name:
                shutil.copyfile(HISTORY, path)
            else:
                fields = [fields] if isinstance(fields, str) else fields
                path.write_text("\n".join([",".join([spec["x"], *fields]), *CSV_ROWS]) + "\n")


@pytest.fixture
def project(tmp_path):
    """This repo's dvc.yaml, with two datasets' plot files under data/."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copyfile(REPO / DVC_FILE, tmp_path / DVC_FILE)
    params = tiny_params({"data": {"name": "first", "url": "unused.zip"}})
    params["datasets"] = {name: params["datasets"]["first"] for name in DATASETS}
    write_params(tmp_path / PARAMS_FILE, params)
    for name, size in DATASETS.items():
        _write_plot_files(tmp_path, name, size)
    return tmp_path


@pytest.mark.parametrize("name", DATASETS)
def test_plots_of_each_dataset_render_offline(project, name, capsys):
    main(["--project", str(project), "--dataset", name] if name != "first" else ["--project", str(project)])
    out = DatasetLayout.of(name, project).offline_plots
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    curves = out / "training_curves-0.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = Image.open(curves).size
    assert width > 200 and height > 100  # a drawn chart, not an empty canvas
    images = sorted(p for p in out.glob("data_*.png-0.png"))
    assert len(images) == 6 and {Image.open(p).size for p in images} == {DATASETS[name]}  # this dataset's
    html = (out / "index.html").read_text()
    assert f"<h1>DVC plots of {name} (" in html and "Not shown" not in html
    assert 'src="training_curves-0.png"' in html and 'src="confusion_dense-0.png"' in html
    assert "http" not in html.replace(str(project), "")  # nothing to fetch
    history = [f"data_{name}_models_{head}_history.csv-0.png" for head in HEADS]  # the stages' val_accuracy plots
    assert [p.name for p in out.glob("data_*.csv-0.png")] == history
    assert len(list(out.iterdir())) == 1 + 4 + 2 + 6 + 1  # marker, 4 + 2 vega charts, 6 images, index.html
    assert not (project / "dvc_plots").exists()  # DVC's default copy of the image plots went to a scratch folder


def test_a_dataset_without_plot_files_is_refused_and_nothing_written(project):
    shutil.rmtree(project / "data" / "second")
    out = project / "offline"
    with pytest.raises(
        PlotsError, match="of second .*: none of its 14 files exist, e.g. data/second/models/dense/history.csv"
    ):
        main(["--project", str(project), "--dataset", "second", "--out", str(out)])
    assert not out.exists()


def test_a_folder_that_is_no_dvc_project_is_refused_and_nothing_written(tmp_path):
    write_params(tmp_path / PARAMS_FILE, tiny_params())
    with pytest.raises(PlotsError, match="found no plots"):
        main(["--project", str(tmp_path), "--out", str(tmp_path / "offline")])
    assert not (tmp_path / "offline").exists()
