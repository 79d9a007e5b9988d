"""`dvc plots show` without a network: its vega-lite plots rendered to PNG here (vl-convert bundles Vega, where
`dvc plots show`'s page loads it from a CDN and shows nothing offline), beside its image plots, in one index.html.

    python -m pipeline.evaluation.offline_plots [--out FOLDER] [--project DIR]

Default folder: data/<data.name>/reports/plots_offline. Not a stage: it shows whatever the workspace holds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from html import escape
from pathlib import Path

import vl_convert

from pipeline.cli import output, parser, run_cli, setup_logging
from pipeline.config import load_config
from pipeline.files import atomic_path, folder_of
from pipeline.layout import DatasetLayout

PNG_SCALE = 2  # vega's pixel size is small for a screen page
OUTPUT = folder_of("offline_plots")  # replaced whole: only a folder this command wrote (or an empty one)


class PlotsError(RuntimeError):
    """`dvc plots show --json` failed."""


def dvc_plots(project: Path, scratch: Path) -> dict:
    """`dvc plots show --json` (this interpreter's DVC) in `project`: {"data": {id: [plot, ...]}, "errors": [...]}.
    DVC copies the image plots into `scratch` (by default it would write a dvc_plots/ folder into the project)."""
    cmd = [sys.executable, "-m", "dvc", "plots", "show", "--json", "-o", str(scratch)]
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    shown = json.loads(done.stdout) if done.returncode == 0 else {}
    if not shown:  # outside a DVC project DVC answers {} and exits 0
        raise PlotsError(f"dvc plots show found no plots in {project}: {done.stderr.strip() or 'no DVC project?'}")
    return shown


def _file_name(plot_id: str, i: int, suffix: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', plot_id).strip('_') or 'plot'}-{i}{suffix}"


def render(shown: dict, project: Path, out: Path) -> list[Path]:
    """Every plot of `shown` as a file in `out` (vega: a PNG; image: a copy), and out/index.html; the files."""
    out.mkdir(parents=True)
    figures, written = [], []
    for plot_id, plots in shown.get("data", {}).items():
        for i, plot in enumerate(plots):
            revisions = ", ".join(plot.get("revisions", []))
            if plot["type"] == "vega":
                path = out / _file_name(plot_id, i, ".png")
                path.write_bytes(vl_convert.vegalite_to_png(plot["content"], scale=PNG_SCALE))
            elif plot["type"] == "image":
                source = project / plot["url"]
                path = out / _file_name(plot_id, i, source.suffix)
                shutil.copyfile(source, path)
            else:
                continue
            written.append(path)
            figures.append(
                f'<figure><img alt="{escape(plot_id)}" src="{escape(path.name)}">'
                f"<figcaption>{escape(plot_id)} ({escape(revisions)})</figcaption></figure>"
            )
    errors = "".join(
        f"<li>{escape(str(e.get('rev')))}: {escape(str(e.get('msg') or e.get('type')))}</li>"
        for e in shown.get("errors", [])
    )
    (out / "index.html").write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>DVC plots</title></head><body>'
        f"<h1>DVC plots of {escape(str(project.resolve()))}</h1>"
        + (f'<h2>Not shown</h2><ul class="errors">{errors}</ul>' if errors else "")
        + "".join(figures)
        + "</body></html>\n"
    )
    return [*written, out / "index.html"]


def write_offline_plots(project: Path, out: Path) -> Path:
    """Render `project`'s plots into `out` as a whole: a failed run leaves the previous folder as it was."""
    with tempfile.TemporaryDirectory(prefix="dvc_plots-") as scratch, atomic_path(out, OUTPUT) as tmp:
        render(dvc_plots(project, Path(scratch)), project, tmp)
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--project", type=Path, default=Path("."), help="the DVC project (default: this folder)")
    ap.add_argument(
        "--out", type=output(OUTPUT), help="folder to write (default: data/<data.name>/reports/plots_offline)"
    )
    args = ap.parse_args(argv)
    setup_logging()
    if (out := args.out) is None:
        out = DatasetLayout.of(
            load_config(args.project / args.params, args.dataset).data.name, args.project
        ).offline_plots
    print(write_offline_plots(args.project, out))


if __name__ == "__main__":
    run_cli(main, PlotsError)
