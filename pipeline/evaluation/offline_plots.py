"""`dvc plots show` without a network: its vega-lite plots rendered to PNG here (vl-convert bundles Vega, where
`dvc plots show`'s page loads it from a CDN and shows nothing offline), beside its image plots, in one index.html.

    python -m pipeline.evaluation.offline_plots [--dataset NAME] [--out FOLDER] [--project DIR]

The plots are dvc.yaml's top-level ones, of `data/${default_dataset}/…`, for the dataset --dataset names (default:
data.name). Default folder: data/<name>/reports/plots_offline. Not a stage: it shows whatever the workspace holds.
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
from dvc.utils.serialize import dump_yaml, load_yaml

from pipeline.cli import output, parser, run_cli, setup_logging
from pipeline.config import load_config
from pipeline.files import atomic_path, folder_of
from pipeline.layout import DATA_ROOT, DEFAULT_DATASET_KEY, DVC_FILE, DatasetLayout

PNG_SCALE = 2  # vega's pixel size is small for a screen page
OUTPUT = folder_of("offline_plots")  # replaced whole: only a folder this command wrote (or an empty one)


class PlotsError(RuntimeError):
    """`dvc plots show --json` failed."""


def dataset_project(project: Path, name: str, scratch: Path) -> Path:
    """A DVC project in `scratch` whose dvc.yaml holds `project`'s top-level plots with `default_dataset` set to
    `name`, and whose data/ is `project`'s: DVC reads `${default_dataset}` only from dvc.yaml's vars (the default
    dataset's), and a plain path target loses its definition's template (a confusion matrix drawn as a line)."""
    dvc_file = project / DVC_FILE
    stages = load_yaml(dvc_file) if dvc_file.is_file() else {}
    plots = stages.get("plots")
    if not plots:
        raise PlotsError(f"dvc plots show found no plots in {project}: no top-level plots in its {DVC_FILE}")
    for stage in stages.get("stages", {}).values():  # a foreach stage's plot outputs, `data/${item}/…`
        for plot in stage.get("do", {}).get("plots", []):
            plots += [{path: {k: v for k, v in props.items() if k != "cache"}} for path, props in plot.items()]
    (scratch / ".dvc").mkdir(parents=True)
    (scratch / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")  # what `dvc init --no-scm` writes
    dump_yaml(scratch / DVC_FILE, {"vars": [{DEFAULT_DATASET_KEY: name, "item": name}], "plots": plots})
    (scratch / DATA_ROOT).symlink_to((project / DATA_ROOT).resolve(), target_is_directory=True)
    return scratch


def dvc_plots(project: Path, scratch: Path, of: str) -> dict:
    """`dvc plots show --json` (this interpreter's DVC) in `project`: {"data": {id: [plot, ...]}, "errors": [...]}.
    DVC copies the image plots into `scratch` (by default it would write a dvc_plots/ folder into the project).
    `of`: what the plots are of, for the error."""
    cmd = [sys.executable, "-m", "dvc", "plots", "show", "--json", "-o", str(scratch)]
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    shown = json.loads(done.stdout) if done.returncode == 0 else {}
    if not any(shown.get("data", {}).values()):  # none of the files there (a dataset not run yet): exits 0
        missing = [e["source"] for e in shown.get("errors", []) if e.get("type") == "FileNotFoundError"]
        why = f"none of its {len(missing)} files exist, e.g. {missing[0]}" if missing else done.stderr.strip()
        raise PlotsError(f"dvc plots show found no plots of {of}: {why or 'no DVC project?'}")
    return shown


def _file_name(plot_id: str, i: int, suffix: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', plot_id).strip('_') or 'plot'}-{i}{suffix}"


def render(shown: dict, project: Path, out: Path, title: str) -> list[Path]:
    """Every plot of `shown` as a file in `out` (vega: a PNG; image: a copy), and out/index.html headed `title`;
    the files. Image plots' urls are relative to `project`."""
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
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head><body>'
        f"<h1>{escape(title)}</h1>"
        + (f'<h2>Not shown</h2><ul class="errors">{errors}</ul>' if errors else "")
        + "".join(figures)
        + "</body></html>\n"
    )
    return [*written, out / "index.html"]


def write_offline_plots(project: Path, name: str, out: Path) -> Path:
    """Render `project`'s plots of dataset `name` into `out` as a whole: a failed run leaves the previous folder
    as it was."""
    with tempfile.TemporaryDirectory(prefix="dvc_plots-") as scratch, atomic_path(out, OUTPUT) as tmp:
        of = f"{name} ({project.resolve() / DATA_ROOT / name})"
        shown_in = dataset_project(project, name, Path(scratch) / "project")
        render(dvc_plots(shown_in, Path(scratch) / "images", of), shown_in, tmp, f"DVC plots of {of}")
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--project", type=Path, default=Path("."), help="the DVC project (default: this folder)")
    ap.add_argument(
        "--out", type=output(OUTPUT), help="folder to write (default: data/<data.name>/reports/plots_offline)"
    )
    args = ap.parse_args(argv)
    setup_logging()
    name = load_config(args.project / args.params, args.dataset).data.name
    print(write_offline_plots(args.project, name, args.out or DatasetLayout.of(name, args.project).offline_plots))


if __name__ == "__main__":
    run_cli(main, PlotsError)
