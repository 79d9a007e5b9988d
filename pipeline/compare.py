"""Experiments side by side, one row per (experiment, dataset), in 100 columns.

    python -m pipeline.compare                   # the workspace, the last commits and their DVC experiments
    python -m pipeline.compare -n 5 --dataset cats_and_dogs_filtered

`dvc exp show` cannot do this with several datasets: DVC prefixes each metric column with its file's path, so a
`--keep` on metric names keeps nothing and every dataset adds ~600 columns. This reads `dvc exp show --json` and
prints, per dataset, both heads' test accuracy (reports/metrics.json) and the validation loss of the epoch each
model keeps (models/<head>/summary.json): the numbers the shipped model is judged by.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

from pipeline.cli import parser, run_cli
from pipeline.layout import HEADS, SUMMARY_FILE, DatasetLayout

WIDTH = 100
_METRICS = ("test acc", "val loss")  # per head: reports/metrics.json's accuracy, summary.json's val_loss


class CompareError(RuntimeError):
    """`dvc exp show` failed (not a DVC project, or DVC's own error)."""


def dvc_exp_show(n: int) -> list[dict]:
    done = subprocess.run(["dvc", "exp", "show", "--json", "-n", str(n)], capture_output=True, text=True)
    if done.returncode != 0:
        raise CompareError(f"dvc exp show failed: {done.stderr.strip().splitlines()[-1:]}")
    if isinstance(shown := json.loads(done.stdout), list):
        return shown
    raise CompareError(f"dvc exp show printed a JSON {type(shown).__name__}, not a list")


def _revisions(shown: list[dict]) -> Iterator[tuple[str, dict]]:
    """(label, data) of the workspace, each commit and each of its experiments, in `dvc exp show`'s order."""
    for base in shown:
        label = "workspace" if base["rev"] == "workspace" else base.get("name") or base["rev"][:7]
        if base.get("data"):
            yield label, base["data"]
        for exp_range in base.get("experiments") or []:
            for state in exp_range.get("revs") or []:
                if state.get("data"):
                    yield f"  {state.get('name') or exp_range.get('name') or state['rev'][:7]}", state["data"]


def _metric(data: dict, path: str, *keys: str) -> object:
    node = (data.get("metrics") or {}).get(path, {}).get("data")
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def rows(shown: list[dict], datasets: list[str] | None = None) -> list[tuple]:
    """(experiment, dataset, dense test acc, dense val loss, finetune test acc, finetune val loss) for every
    dataset whose metrics a revision holds (those of `datasets` only, when given)."""
    out = []
    for label, data in _revisions(shown):
        names = sorted({path.split("/")[1] for path in data.get("metrics") or {} if path.startswith("data/")})
        for name in (n for n in names if datasets is None or n in datasets):
            layout = DatasetLayout.of(name)
            values = []
            for head in HEADS:
                values.append(_metric(data, layout.metrics.as_posix(), head, "accuracy"))
                values.append(_metric(data, (layout.model_dir(head) / SUMMARY_FILE).as_posix(), "val_loss"))
            if any(v is not None for v in values):
                out.append((label, name, *values))
    return out


def table(found: list[tuple]) -> str:
    def cell(value: object, spec: str) -> str:
        return f"{'-':>{spec[1:3]}}" if not isinstance(value, int | float) else format(value, spec)

    lines = [
        " " * 48 + "".join(f"{h:>13}" for h in HEADS for _ in _METRICS),
        f"{'experiment':<24}{'dataset':<24}" + "".join(f"{m:>13}" for _ in HEADS for m in _METRICS),
    ]
    for label, name, *values in found:
        specs = (">13.2%", ">13.4f") * len(HEADS)
        text = f"{label[:23]:<24}{name[:23]:<24}" + "".join(cell(v, s) for v, s in zip(values, specs))
        lines.append(text)
    return "\n".join(line[:WIDTH] for line in lines)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, dataset_default="every dataset")
    ap.add_argument("-n", type=int, default=3, help="commits back from HEAD, each with its experiments (default 3)")
    args = ap.parse_args(argv)
    found = rows(dvc_exp_show(args.n), [args.dataset] if args.dataset else None)
    where = f"of {args.dataset} " if args.dataset else ""
    print(table(found) if found else f"no metrics {where}in the last {args.n} commits or their experiments")


if __name__ == "__main__":
    run_cli(main, CompareError)
