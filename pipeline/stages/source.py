"""Stage 0: check params.yaml and fingerprint every dataset's source, before any stage's outputs are touched.

DVC deletes a stage's declared outputs before it runs the stage's command: this stage's only output is a fixed
folder, so an invalid value (of any dataset) stops `dvc repro` here, with everything on disk as it was. The other
stages' paths come from data/datasets.yaml, which holds checked names only (pipeline.datasets); when params.yaml
adds or removes a dataset, this stage updates that list and stops the run, to be run again. It always runs (a second per
dataset); the record of a dataset (data/sources/<name>.json) changes when its url or the local archive or folder
it names changes, and then that dataset's download stage re-runs, and only that one.
"""

from __future__ import annotations

from pipeline.cli import output, parser, run_cli, setup_logging
from pipeline.config import load_params, parse_all
from pipeline.data.archive import DownloadError, source_fingerprint
from pipeline.datasets import require_in_step
from pipeline.files import atomic_path, folder_of, log, write_json
from pipeline.layout import source_record

OUTPUT = folder_of("source")  # replaced whole: only a folder this stage wrote (or an empty one)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument(
        "--out", type=output(OUTPUT), required=True, help="folder: one JSON per dataset (name, URL, fingerprint)"
    )
    args = ap.parse_args(argv)
    setup_logging()
    configs = parse_all(load_params(args.params), str(args.params))
    require_in_step(args.params)  # a name dvc.yaml's stages use has passed the checks above
    with atomic_path(args.out, OUTPUT) as tmp:
        tmp.mkdir()
        for data in (cfg.data for cfg in configs):
            record = {"name": data.name, "url": data.url, "source": source_fingerprint(data.url)}
            write_json(tmp / source_record(data.name).name, record)
    log.info("params valid; sources of %s fingerprinted in %s", ", ".join(c.data.name for c in configs), args.out)


if __name__ == "__main__":
    run_cli(main, DownloadError)
