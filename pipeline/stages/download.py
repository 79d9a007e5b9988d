"""Stage 1: fetch the dataset (URL, file:// URL, local path or folder, or a local mirror), verify it, extract it.

Offline use: set PIPELINE_DATA_MIRROR to a folder holding a file with the archive's name (e.g. ../shared/mirror);
it is used instead of the network and verified the same way. The record of what was fetched (--info) is the
same on every machine; where it was read from goes to the execution record (--execution), which nothing hashes.
"""

from __future__ import annotations

from pipeline.cli import execution_record, output, parser, run_cli, setup_logging
from pipeline.config import load_config
from pipeline.data.archive import RAW, DownloadError, download
from pipeline.files import JSON


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--out", type=output(RAW), required=True, help="folder to extract into")
    ap.add_argument("--info", type=output(JSON), required=True, help="JSON record of what was fetched")
    ap.add_argument("--execution", type=output(JSON), required=True, help="JSON: where it came from, how long it took")
    args = ap.parse_args(argv)
    setup_logging()
    with execution_record(args.execution) as facts:
        info, facts["source"] = download(load_config(args.params, args.dataset).data, args.out)
        info.save(args.info)


if __name__ == "__main__":
    run_cli(main, DownloadError)
