"""The tiny project's report.html as a browser shows it (Debian's headless Chromium, `make test` installs it):
every section there and every inlined plot decoded, with the network cut off, as when opened offline. Then a
second, three-class dataset beside the default one: its report and its offline DVC plots page."""

import hashlib
import re
import shutil
import subprocess
import sys

import pytest

from pipeline.evaluation.report import TITLE
from pipeline.files import read_json
from pipeline.layout import DVC_FILE, HEADS, PARAMS_FILE, SUMMARY_FILE, DatasetLayout
from tests.helpers import REPO
from tests.helpers.images import make_dataset
from tests.helpers.params import tiny_params, write_params
from tests.helpers.pipeline import run_stages
from tests.helpers.processes import env

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SECTIONS = ["Data", "Test metrics", "Training (validation split)", "Plots"]


def test_report_opens_offline_with_every_section_and_image(tiny_project):
    report = tiny_project.layout.report
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.goto(report.resolve().as_uri())
            title = page.text_content("h1")
            headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
            images = page.eval_on_selector_all("img", "is => is.map(i => [i.alt, i.complete, i.naturalWidth])")
            body = page.text_content("body")
        finally:
            browser.close()
    assert title == f"{tiny_project.cfg.data.name}: evaluation report"
    assert headings == SECTIONS
    assert "Made " in body and "unfreeze_blocks" in body
    assert {f"curves_{h}" for h in HEADS} | {"roc"} <= {alt for alt, _, _ in images}
    assert [alt for alt, complete, width in images if not (complete and width > 0)] == []


@pytest.fixture(scope="module")
def second_dataset(tmp_path_factory):
    """A DVC project (this repo's dvc.yaml) with two datasets: the default one not run, the second one, three
    classes, run from prepare to evaluate, its fine-tuning at a learning rate that wrecks every epoch (so it keeps
    its start, as test_recipes shows). The project and the second dataset's layout."""
    root = tmp_path_factory.mktemp("second")
    shutil.copyfile(REPO / DVC_FILE, root / DVC_FILE)
    wreck = {"learning_rate": 1.0, "optimizer": "rmsprop", "schedule": "constant", "epochs": 2}
    params = tiny_params({"data": {"name": "first", "url": "unused.zip"}, "finetune": wreck})
    params["datasets"] = {name: params["datasets"]["first"] for name in ("first", "three")}
    write_params(root / PARAMS_FILE, params)
    layout = DatasetLayout.of("three", root)
    make_dataset(layout.raw, n_classes=3, per_class=15, layout="flat")
    run_stages(layout, root / PARAMS_FILE, first="prepare")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root, layout


def _open(path, script: str, arg=None):
    """`script` (a JS function of `arg`) evaluated on `path` as a browser shows it offline."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_context(offline=True).new_page()
            page.goto(path.resolve().as_uri())
            return page.evaluate(script, arg)
        finally:
            browser.close()


PAGE = """() => ({
    h1: document.querySelector('h1').textContent,
    h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
    images: [...document.querySelectorAll('img')].map(i => [i.alt, i.complete && i.naturalWidth > 0]),
    body: document.body.textContent,
})"""
TABLE = """(heading) => [...[...document.querySelectorAll('h2')].find(h => h.textContent === heading)
    .nextElementSibling.rows].map(r => [...r.cells].map(c => c.textContent))"""


def test_offline_plots_of_a_second_dataset_are_its_own(second_dataset):
    root, layout = second_dataset
    cmd = [sys.executable, "-m", "pipeline.evaluation.offline_plots", "--dataset", "three"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(layout.offline_plots.relative_to(root) / "index.html")
    shown = _open(layout.offline_plots / "index.html", PAGE)
    assert shown["h1"].startswith("DVC plots of three (")
    not_shown = _open(layout.offline_plots / "index.html", "() => [...document.querySelectorAll('.errors li')].length")
    assert not_shown == 3 and shown["body"].count("data/three/reports/plots/roc") == 3  # ROC: two classes only
    assert [alt for alt, drawn in shown["images"] if not drawn] == []
    alts = {alt for alt, _ in shown["images"]}
    assert {"confusion dense", "training curves", "data/three/reports/plots/confusion_dense.png"} <= alts


def test_report_of_a_multiclass_second_dataset_reads_right(second_dataset):
    _, layout = second_dataset
    shown = _open(layout.report, PAGE)
    assert shown["h1"] == f"three{TITLE}"
    metrics = _open(layout.report, TABLE, "Test metrics")
    header = metrics[0]
    assert "macro_f1" in header and "f1" not in header  # on three classes f1 is macro_f1 again
    for row in metrics[1:]:
        assert re.fullmatch(r"[01]\.\d{4}", row[header.index("roc_auc")])  # an AUC, not a percentage
    training = _open(layout.report, TABLE, "Training (validation split)")
    assert all(row[training[0].index("class_weight")] for row in training[1:])  # "none" when unweighted
    shipped = read_json(layout.model_dir("finetune") / SUMMARY_FILE)["shipped"]
    assert f"Shipped (predict's default, @champion): {shipped}, the candidate of lowest" in shown["body"]
    md5 = hashlib.md5(layout.model_file("dense").read_bytes()).hexdigest()
    assert f"git log -S {md5} -- dvc.lock" in shown["body"]  # its commit and date, from the workspace
