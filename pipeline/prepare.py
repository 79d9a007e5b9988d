"""Stage 2: validate every image, split train / validation / test deterministically, write the manifest.

Layouts understood (class = sub-folder name):
  root/{train,validation[,test]}/<class>/...   kept as given; a missing test (or validation) split is carved
  root/<class>/...                              split by params split.validation / split.test
Every file under raw/ ends up either in manifest.csv or, with its reason, in quarantine.csv (paths relative to
raw/); the counts per reason go to the summary JSON. Nothing in raw/ is touched.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from pipeline.config import SplitConfig, load_config
from pipeline.images import IMAGE_SUFFIXES, check_image
from pipeline.io import atomic_path, log, run_cli, setup_logging, sha256_file, write_json, write_text
from pipeline.manifest import FIELDS, IMBALANCE_WARNING, SPLITS, Row, imbalance_ratio

SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "test": "test", "testing": "test"}
MIN_PER_SPLIT = 1


class DatasetError(ValueError):
    """The dataset as a whole can't be used (too few classes or images); the message says why."""


def _visible(p: Path | str) -> bool:
    name = Path(p).name
    return not (name.startswith(".") or name == "__MACOSX")  # .DS_Store, ._resource forks, macOS zips


def find_root(raw: Path) -> Path:
    """Descend through single wrapper folders (e.g. the archive's top-level folder)."""
    root = raw
    while True:
        dirs = [d for d in root.iterdir() if d.is_dir() and _visible(d)]
        if len(dirs) != 1 or dirs[0].name.lower() in SPLIT_ALIASES:
            return root
        inner = dirs[0]
        if not any(c.is_dir() and _visible(c) for c in inner.iterdir()):
            return root  # a single class folder: leave it to the class checks
        root = inner


def scan(root: Path) -> tuple[list[tuple[Path, str, str | None]], list[tuple[Path, str]], Counter]:
    """Return ([(file, class, given split)], [(file, reason)] for non-images, image files per class folder)."""
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in root.iterdir()
                  if d.is_dir() and d.name.lower() in SPLIT_ALIASES}
    tops = [(d, s) for s, d in split_dirs.items()] if split_dirs else [(root, None)]
    items, rejected, classes = [], [], Counter()
    for top, split in tops:
        for f in sorted(top.iterdir()):
            if f.is_file():
                rejected.append((f, "outside any class folder"))
        for cls_dir in sorted(d for d in top.iterdir() if d.is_dir()):
            if not _visible(cls_dir):
                rejected.extend((f, "inside a hidden folder") for f in sorted(cls_dir.rglob("*")) if f.is_file())
                continue
            classes[cls_dir.name] += 0
            for f in sorted(cls_dir.rglob("*")):
                if not f.is_file():
                    continue
                if any(not _visible(part) for part in f.relative_to(cls_dir).parts):
                    rejected.append((f, "hidden file"))
                elif f.suffix.lower() not in IMAGE_SUFFIXES:
                    rejected.append((f, f"not an image file suffix ({f.suffix or 'none'})"))
                else:
                    classes[cls_dir.name] += 1  # a folder holding only .DS_Store or notes counts as empty
                    items.append((f, cls_dir.name, split))
    return items, rejected, classes


def unreached(raw: Path, seen: set[Path]) -> list[tuple[Path, str]]:
    """Files the class-folder scan never visits (beside the wrapper folder, __MACOSX/, extra folders)."""
    return [(f, "outside any class folder") for f in sorted(raw.rglob("*")) if f.is_file() and f not in seen]


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(items: list[tuple[str, str, str | None]], cfg: SplitConfig) -> dict[str, str]:
    """Map each relative path to a split. Stratified per class; depends only on the seed and the paths."""
    given = {s for _, _, s in items if s}
    by_class: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for rel, label, split in items:
        by_class[(label, split)].append(rel)
    out: dict[str, str] = {}
    for (label, split), rels in sorted(by_class.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        rels.sort(key=lambda r: _rank(cfg.seed, r))
        n = len(rels)
        if split is None:  # flat layout: carve both
            n_test, n_val = round(n * cfg.test), round(n * cfg.validation)
            parts = [("test", n_test), ("validation", n_val)]
        elif split == "validation" and "test" not in given:
            parts = [("test", round(n * cfg.test_from_validation))]
        elif split == "train" and "validation" not in given:
            parts = [("validation", round(n * cfg.validation))]
            if "test" not in given:
                parts.append(("test", round(n * cfg.test)))
        else:
            parts = []
        start = 0
        for name, count in parts:
            for rel in rels[start:start + count]:
                out[rel] = name
            start += count
        for rel in rels[start:]:
            out[rel] = split or "train"
    return out


def _check(args: tuple[str, str]) -> tuple[str, str | None, bool, str]:
    src, converted = args
    result = check_image(Path(src), Path(converted))
    return src, result.reason, result.converted, sha256_file(src) if result.reason is None else ""


def check_images(items: list[tuple[Path, str, str | None]], root: Path, write_dir: Path, final_dir: Path,
                 workers: int | None = None) -> tuple[list[tuple], list[tuple[Path, str]]]:
    """Decode every image in parallel. Conversions are written to `write_dir` and referenced as `final_dir`
    (they differ while the output folder is still a temp dir). Returns (good rows, [(file, reason)])."""
    jobs = [(str(f), str(write_dir / f"{_rank(0, str(f.relative_to(root)))[:24]}.png")) for f, _, _ in items]
    with ProcessPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(tqdm(pool.map(_check, jobs, chunksize=16), total=len(jobs), desc="check images"))
    good, quarantine = [], []
    for (f, label, split), (_, reason, converted, digest), (_, conv) in zip(items, results, jobs):
        if reason is not None:
            quarantine.append((f, reason))
        else:
            read_from = final_dir / Path(conv).name if converted else f.resolve()
            good.append((str(f.relative_to(root)), label, split, digest, read_from))
    return good, quarantine


def prepare(raw: Path, out_dir: Path, summary_path: Path, cfg: SplitConfig, workers: int | None = None) -> dict:
    """Write manifest.csv, quarantine.csv, duplicates.csv (+ converted images) under `out_dir`, counts to
    `summary_path`."""
    if not raw.is_dir():
        raise DatasetError(f"{raw}: no such folder (run the download stage first)")
    root = find_root(raw)
    items, rejected, folders = scan(root)
    rejected += unreached(raw, {f for f, _, _ in items} | {f for f, _ in rejected})
    base = out_dir.resolve()
    with atomic_path(out_dir) as tmp:
        good, bad = check_images(items, root, tmp / "converted", base / "converted", workers)
        quarantine = [(f.relative_to(raw).as_posix(), reason) for f, reason in sorted(rejected + bad)]
        _report(quarantine)
        summary = _finish(good, quarantine, folders, root, base, tmp, cfg)
    write_json(summary_path, summary)
    log.info("prepared %d images in %s (%s); quarantined %d, listed with reasons in %s", summary["images"],
             out_dir, summary["per_split"], summary["quarantined"], out_dir / "quarantine.csv")
    return summary


def _reason_counts(quarantine: list[tuple[str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(reason.split(":")[0] for _, reason in quarantine).items()))


def _report(quarantine: list[tuple[str, str]]) -> None:
    """Log what was quarantined, one line per reason with an example, before any check can stop the run."""
    for kind, n in _reason_counts(quarantine).items():
        example = next(p for p, r in quarantine if r.split(":")[0] == kind)
        log.warning("quarantined %d file(s): %s (e.g. %s)", n, kind, example)


def _finish(good: list, quarantine: list[tuple[str, str]], folders: Counter, root: Path, base: Path,
            tmp: Path, cfg: SplitConfig) -> dict:
    counts = Counter(label for _, label, _, _, _ in good)
    empty = sorted(c for c, n in folders.items() if n == 0)
    for c in empty:
        log.warning("class folder %r holds no image files: ignored", c)
    classes = sorted(c for c, n in folders.items() if n > 0)
    if len(classes) < 2:
        raise DatasetError(f"{root}: found {len(classes)} non-empty class folder(s) {classes}; need at least 2")
    split_of = assign_splits([(rel, label, split) for rel, label, split, _, _ in good], cfg)
    rows = [Row(path=os.path.relpath(read_from, base), source=rel, label=label, split=split_of[rel], sha256=digest)
            for rel, label, _, digest, read_from in good]
    per = Counter((r.label, r.split) for r in rows)
    for label in classes:
        short = [s for s in SPLITS if per[(label, s)] < MIN_PER_SPLIT]
        if short:
            raise DatasetError(f"class {label!r} has {counts[label]} usable image(s), too few to fill split(s) "
                               f"{short}; add images or remove the class folder")
    dup = defaultdict(set)
    for r in rows:
        dup[r.sha256].add((r.split, r.source))
    cross = {h: sorted(v) for h, v in dup.items() if len({s for s, _ in v}) > 1}
    _write_csv(tmp / "manifest.csv", FIELDS, [r.as_list() for r in rows])
    _write_csv(tmp / "quarantine.csv", ["path", "reason"], quarantine)
    _write_csv(tmp / "duplicates.csv", ["sha256", "split", "source"],
               [[h, s, src] for h, v in sorted(cross.items()) for s, src in v])
    summary = {
        "images": len(rows), "classes": classes, "empty_class_folders": empty, "quarantined": len(quarantine),
        "quarantine_reasons": _reason_counts(quarantine),
        "per_split": {s: sum(1 for r in rows if r.split == s) for s in SPLITS},
        "per_class": {c: {s: per[(c, s)] for s in SPLITS} for c in classes},
        "imbalance_ratio": imbalance_ratio({c: per[(c, "train")] for c in classes}),
        "cross_split_duplicates": len(cross),
    }
    if summary["imbalance_ratio"] > IMBALANCE_WARNING:
        log.warning("classes are imbalanced: the largest has %.1fx the train images of the smallest %s; consider "
                    "dense.class_weight / finetune.class_weight: balanced", summary["imbalance_ratio"],
                    {c: per[(c, "train")] for c in classes})
    if cross:
        log.warning("%d identical images appear in more than one split (see duplicates.csv)", len(cross))
    return summary


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--raw", type=Path, required=True, help="folder written by the download stage")
    ap.add_argument("--out", type=Path, required=True, help="folder for manifest.csv and reports")
    ap.add_argument("--summary", type=Path, required=True, help="JSON counts (DVC metrics)")
    args = ap.parse_args(argv)
    setup_logging()
    prepare(args.raw, args.out, args.summary, load_config(args.params).split)


if __name__ == "__main__":
    run_cli(main, DatasetError)
