"""Stage 2: validate every image, split train / validation / test deterministically, write the manifest.

Every file under raw/ (but the download stage's marker) ends up either in manifest.csv or, with its reason, in
quarantine.csv (paths relative to raw/); the counts per reason go to the summary JSON. Nothing in raw/ is touched.
Layouts: data/dataset.py.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from pipeline.cli import output, parser, run_cli, setup_logging
from pipeline.config import SplitConfig, load_config
from pipeline.contracts import PrepareSummary
from pipeline.data.dataset import DatasetError, Usable, check_images, find_root, scan, unreached
from pipeline.data.manifest import FIELDS, IMBALANCE_WARNING, Row, imbalance_ratio
from pipeline.data.splits import assign_splits
from pipeline.files import JSON, MARKER, atomic_path, folder_of, log, write_csv
from pipeline.layout import DUPLICATES_FILE, MANIFEST_FILE, QUARANTINE_FILE, SPLITS

MIN_PER_SPLIT = 1
OUTPUT = folder_of("prepare")  # replaced whole: only a folder this stage wrote (or an empty one)


def prepare(
    raw: Path, out_dir: Path, summary_path: Path, cfg: SplitConfig, processes: int | None = None
) -> PrepareSummary:
    """Write manifest.csv, quarantine.csv, duplicates.csv (+ converted images) under `out_dir`, counts to
    `summary_path`."""
    if not raw.is_dir():
        raise DatasetError(f"{raw}: no such folder (run the download stage first)")
    root = find_root(raw)
    found = scan(root)
    for note in found.layout_notes:
        log.warning("ambiguous layout: %s", note)
    rejected = found.rejected + unreached(raw, {i.file for i in found.images} | {f for f, _ in found.rejected})
    rejected = [(f, reason) for f, reason in rejected if f != raw / MARKER]  # download's, not the dataset's
    base = out_dir.resolve()
    with atomic_path(out_dir, OUTPUT) as tmp:
        usable, bad = check_images(found.images, root, tmp / "converted", base / "converted", processes)
        quarantine = [(f.relative_to(raw).as_posix(), reason) for f, reason in sorted(rejected + bad)]
        _report(quarantine)
        classes = _classes(found.class_files, root)
        rows = _rows(usable, base, classes, assign_splits([(u.source, u.label, u.split) for u in usable], cfg))
        cross = _cross_split_duplicates(rows)
        write_csv(tmp / MANIFEST_FILE, FIELDS, [r.as_list() for r in rows])
        write_csv(tmp / QUARANTINE_FILE, ["path", "reason"], quarantine)
        write_csv(
            tmp / DUPLICATES_FILE,
            ["sha256", "split", "source"],
            [[h, s, src] for h, v in sorted(cross.items()) for s, src in v],
        )
    summary = _summary(rows, classes, found.class_files, quarantine, len(cross), found.layout_notes)
    summary.save(summary_path)
    log.info(
        "prepared %d images in %s (%s); quarantined %d, listed with reasons in %s",
        summary.images,
        out_dir,
        summary.per_split,
        summary.quarantined,
        out_dir / QUARANTINE_FILE,
    )
    return summary


def _reason_counts(quarantine: list[tuple[str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(reason.split(":")[0] for _, reason in quarantine).items()))


def _report(quarantine: list[tuple[str, str]]) -> None:
    """Log what was quarantined, one line per reason with an example, before any check can stop the run."""
    for kind, n in _reason_counts(quarantine).items():
        example = next(p for p, r in quarantine if r.split(":")[0] == kind)
        log.warning("quarantined %d file(s): %s (e.g. %s)", n, kind, example)


def _classes(class_files: Counter, root: Path) -> list[str]:
    """The non-empty class folders; fewer than two is no classification problem."""
    for c in sorted(c for c, n in class_files.items() if n == 0):
        log.warning("class folder %r holds no image files: ignored", c)
    classes = sorted(c for c, n in class_files.items() if n > 0)
    if len(classes) < 2:
        raise DatasetError(f"{root}: found {len(classes)} non-empty class folder(s) {classes}; need at least 2")
    return classes


def _rows(usable: list[Usable], base: Path, classes: list[str], split_of: dict[str, str]) -> list[Row]:
    """Manifest rows (paths relative to the manifest's folder); every class must reach every split."""
    rows = [
        Row(
            path=os.path.relpath(u.read_from, base),
            source=u.source,
            label=u.label,
            split=split_of[u.source],
            sha256=u.sha256,
        )
        for u in usable
    ]
    per = Counter((r.label, r.split) for r in rows)
    for label in classes:
        short = [s for s in SPLITS if per[(label, s)] < MIN_PER_SPLIT]
        n = sum(per[(label, s)] for s in SPLITS)
        if short == ["train"]:
            raise DatasetError(
                f"class {label!r}: split.validation / split.test (or split.test_from_validation) leave no train "
                f"image of its {n}; lower them or add images"
            )
        if short:
            raise DatasetError(
                f"class {label!r} has {n} usable image(s), too few to fill split(s) "
                f"{short}; add images or remove the class folder"
            )
    return rows


def _cross_split_duplicates(rows: list[Row]) -> dict[str, list[tuple[str, str]]]:
    """sha256 -> [(split, source)] for identical files that landed in more than one split."""
    dup = defaultdict(set)
    for r in rows:
        dup[r.sha256].add((r.split, r.source))
    cross = {h: sorted(v) for h, v in dup.items() if len({s for s, _ in v}) > 1}
    if cross:
        log.warning("%d identical images appear in more than one split (see %s)", len(cross), DUPLICATES_FILE)
    return cross


def _summary(
    rows: list[Row],
    classes: list[str],
    class_files: Counter,
    quarantine: list[tuple[str, str]],
    n_cross: int,
    layout_notes: list[str],
) -> PrepareSummary:
    per = Counter((r.label, r.split) for r in rows)
    ratio = imbalance_ratio({c: per[(c, "train")] for c in classes})
    summary = PrepareSummary(
        images=len(rows),
        classes=classes,
        empty_class_folders=sorted(c for c, n in class_files.items() if n == 0),
        quarantined=len(quarantine),
        quarantine_reasons=_reason_counts(quarantine),
        per_split={s: sum(1 for r in rows if r.split == s) for s in SPLITS},
        per_class={c: {s: per[(c, s)] for s in SPLITS} for c in classes},
        imbalance_ratio=ratio,
        cross_split_duplicates=n_cross,
        layout_notes=layout_notes,
    )
    if ratio > IMBALANCE_WARNING:
        log.warning(
            "classes are imbalanced: the largest has %.1fx the train images of the smallest %s; consider "
            "dense.class_weight / finetune.class_weight: balanced",
            ratio,
            {c: per[(c, "train")] for c in classes},
        )
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--raw", type=Path, required=True, help="folder written by the download stage")
    ap.add_argument("--out", type=output(OUTPUT), required=True, help="folder for manifest.csv and reports")
    ap.add_argument("--summary", type=output(JSON), required=True, help="JSON counts (DVC metrics)")
    args = ap.parse_args(argv)
    setup_logging()
    prepare(args.raw, args.out, args.summary, load_config(args.params, args.dataset).split)


if __name__ == "__main__":
    run_cli(main, DatasetError)
