"""The tiny project's report.html as a browser shows it (Debian's headless Chromium, `make test` installs it):
every section there and every inlined plot decoded, with the network cut off, as when opened offline."""

import shutil

import pytest

from pipeline.layout import HEADS

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SECTIONS = ["Data", "Test metrics", "Training (validation split)", "Plots"]


def test_report_opens_offline_with_every_section_and_image(tiny_project):
    report = tiny_project.data.report
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
