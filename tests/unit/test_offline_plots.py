"""The offline plots page on a real DVC project: vega-lite plots really rendered to PNG, image plots copied."""

import shutil
import subprocess
import sys

import pytest
from PIL import Image

from pipeline.evaluation.offline_plots import PlotsError, main
from pipeline.files import MARKER
from tests.helpers import REPO

HISTORY = REPO / "data" / "cats_and_dogs_filtered" / "models" / "dense" / "history.csv"  # committed to git
DVC_YAML = """plots:
  - training curves:
      template: linear
      x: epoch
      y:
        history.csv: [loss, val_loss]
  - gallery.png
"""


@pytest.fixture
def project(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copyfile(HISTORY, tmp_path / "history.csv")
    Image.new("RGB", (30, 20), "red").save(tmp_path / "gallery.png")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    return tmp_path


def test_plots_render_offline(project, capsys):
    out = project / "offline"
    main(["--project", str(project), "--out", str(out)])
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    curves = out / "training_curves-0.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = Image.open(curves).size
    assert width > 200 and height > 100  # a drawn chart, not an empty canvas
    assert Image.open(out / "gallery.png-0.png").size == (30, 20)
    html = (out / "index.html").read_text()
    assert 'src="training_curves-0.png"' in html and 'src="gallery.png-0.png"' in html
    assert "http" not in html.replace(str(project), "")  # nothing to fetch
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "gallery.png-0.png", "index.html", "training_curves-0.png"]
    assert not (project / "dvc_plots").exists()  # DVC's default copy of the image plots went to a scratch folder


def test_a_folder_that_is_no_dvc_project_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(PlotsError, match="found no plots"):
        main(["--project", str(tmp_path), "--out", str(tmp_path / "offline")])
    assert not (tmp_path / "offline").exists()
