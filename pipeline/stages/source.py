"""Stage 0: check params.yaml and fingerprint the dataset's source, before any stage's outputs are touched.

DVC deletes a stage's declared outputs before it runs the stage's command, and every other stage's outputs are
paths built from data.name: this stage's only output has a fixed path, so a bad name (or any invalid value)
stops `dvc repro` here, with everything on disk as it was. It always runs (it costs a second); its output
changes when data.url or the local archive or folder it names changes, and then the download stage re-runs.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import parser, run_cli, setup_logging
from pipeline.config import load_config
from pipeline.data.archive import DownloadError, source_fingerprint
from pipeline.files import log, write_json


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, required=True, help="JSON: the dataset's name, URL and source fingerprint")
    args = ap.parse_args(argv)
    setup_logging()
    data = load_config(args.params).data
    write_json(args.out, {"name": data.name, "url": data.url, "source": source_fingerprint(data.url)})
    log.info("params valid; source of %s fingerprinted in %s", data.name, args.out)


if __name__ == "__main__":
    run_cli(main, DownloadError)
