"""Which training recipe to ship: every candidate judged on the VALIDATION split only, over several seeds, on six
datasets, beside the baseline to beat (logistic regression on the pooled features): cats vs dogs and ants vs bees
(close to ImageNet), Intel's natural scenes (six classes) and paediatric chest X-rays (far from it), and the 40 px
twins of the first two (small photos). A default must hold on all of them, not only close to ImageNet. Prints
mean ± std of validation accuracy and log loss, and the wall time per run.

    python benchmarks/recipes.py                      # dense candidates, then fine-tune candidates, all six
    python benchmarks/recipes.py --only dense --seeds 42 43 44
    python benchmarks/recipes.py --final              # params.yaml's recipe on the TEST split, once chosen

    python benchmarks/recipes.py --datasets intel_scenes chest_xray_pneumonia   # a subset (recipe_data.DATASETS)

Datasets are prepared and extracted once under .cache/bench/ (benchmarks/recipe_data.py). A fine-tune candidate
starts from the dense head of the recipe named in FINETUNE_FROM, trained with the same seed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import load, machine

from recipe_data import DATASETS, TWINS, baseline_scores, dataset, dense_scores, finetune_scores

from pipeline.layout import MODEL_FILE
from pipeline.stages.train_dense import train_dense
from pipeline.stages.train_finetune import train_finetune

POOLED = {
    "pooling": "avg",
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "flip": False,
}
DENSE = {  # name -> dense.* overrides of params.yaml
    "classic (flatten, 256, rmsprop 2e-5)": {
        "pooling": "flatten",
        "units": 256,
        "optimizer": "rmsprop",
        "learning_rate": 2e-5,
        "schedule": "constant",
        "weight_decay": 0.0,
        "warmup_epochs": 0,
        "label_smoothing": 0.0,
        "ensemble": 1,
        "flip": False,
    },
    "avg, linear, adamw 1e-3": {**POOLED, "units": 0, "learning_rate": 1e-3, "label_smoothing": 0.0, "ensemble": 1},
    "avg, 256, adamw 1e-3": {**POOLED, "units": 256, "learning_rate": 1e-3, "label_smoothing": 0.0, "ensemble": 1},
    "avg, 256, adamw 3e-4": {**POOLED, "units": 256, "learning_rate": 3e-4, "label_smoothing": 0.0, "ensemble": 1},
    "avg, 256, adamw 1e-3, ls 0.1": {
        **POOLED,
        "units": 256,
        "learning_rate": 1e-3,
        "label_smoothing": 0.1,
        "ensemble": 1,
    },
    "avg_max, 256, adamw 1e-3": {
        **POOLED,
        "pooling": "avg_max",
        "units": 256,
        "learning_rate": 1e-3,
        "label_smoothing": 0.0,
        "ensemble": 1,
    },
    "avg, 256, adamw 1e-3, x5": {**POOLED, "units": 256, "learning_rate": 1e-3, "label_smoothing": 0.0, "ensemble": 5},
    "avg, 256, adamw 1e-3, x5, flip": {
        **POOLED,
        "units": 256,
        "learning_rate": 1e-3,
        "label_smoothing": 0.0,
        "ensemble": 5,
        "flip": True,
    },
}
FINETUNE_FROM = "avg, 256, adamw 1e-3, x5, flip"  # the dense default chosen from the table above
CACHED = {
    "augment": {"flip": True, "rotation": 0.0, "zoom": 0.0, "color": 0.0},
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.0,
}
FINETUNE = {  # name -> finetune.* overrides
    "previous default: 4 blocks, flip+rot+zoom, rmsprop 1e-5, 8 ep": {
        "augment": {"flip": True, "rotation": 0.05, "zoom": 0.1, "color": 0.0},
        "optimizer": "rmsprop",
        "weight_decay": 0.0,
        "schedule": "constant",
        "warmup_epochs": 0,
        "label_smoothing": 0.0,
        "unfreeze_blocks": 4,
        "learning_rate": 1e-5,
        "epochs": 8,
    },
    "4 blocks, flip (cached), adamw 1e-4, 6 ep": {**CACHED, "unfreeze_blocks": 4, "learning_rate": 1e-4, "epochs": 6},
    "2 blocks, flip (cached), adamw 1e-4, 6 ep": {**CACHED, "unfreeze_blocks": 2, "learning_rate": 1e-4, "epochs": 6},
    "4 blocks, flip (cached), adamw 1e-5, 6 ep": {**CACHED, "unfreeze_blocks": 4, "learning_rate": 1e-5, "epochs": 6},
    "4 blocks, flip (cached), adamw 3e-5, 6 ep": {**CACHED, "unfreeze_blocks": 4, "learning_rate": 3e-5, "epochs": 6},
    "4 blocks, flip (cached), adamw 1e-5, 3 ep": {**CACHED, "unfreeze_blocks": 4, "learning_rate": 1e-5, "epochs": 3},
    "4 blocks, flip (cached), adamw 1e-4, 3 ep": {**CACHED, "unfreeze_blocks": 4, "learning_rate": 1e-4, "epochs": 3},
    "2 blocks, flip (cached), adamw 1e-5, 3 ep": {**CACHED, "unfreeze_blocks": 2, "learning_rate": 1e-5, "epochs": 3},
    "6 blocks, flip (cached), adamw 1e-4, 3 ep": {**CACHED, "unfreeze_blocks": 6, "learning_rate": 1e-4, "epochs": 3},
    "4 blocks, flip (cached), adamw 3e-4, 3 ep": {**CACHED, "unfreeze_blocks": 4, "learning_rate": 3e-4, "epochs": 3},
    # Far from ImageNet (#25): a budget that validation ends (patience), and augmentation beyond flips.
    "4 blocks, flip (cached), adamw 1e-4, <=10 ep, patience 2": {
        **CACHED,
        "unfreeze_blocks": 4,
        "learning_rate": 1e-4,
        "epochs": 10,
        "patience": 2,
    },
    "4 blocks, flip+zoom+colour (images), adamw 1e-4, <=10 ep, patience 2": {
        **CACHED,
        "augment": {"flip": True, "rotation": 0.0, "zoom": 0.15, "color": 0.2},
        "unfreeze_blocks": 4,
        "learning_rate": 1e-4,
        "epochs": 10,
        "patience": 2,
    },
}


def summarise(name: str, runs: list[dict]) -> str:
    def stat(key: str) -> str:
        values = [r[key] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {spread:.4f}"

    seconds = statistics.mean(r["seconds"] for r in runs)
    line = f"  {name:45s} accuracy {stat('accuracy')}  log loss {stat('log_loss')}  {seconds:6.1f} s/run"
    if "shipped" not in runs[0]:
        return line
    # A fine-tune: what it shipped per seed, each candidate's mean validation loss, epochs and s/epoch.
    shipped = " ".join(r["shipped"] for r in runs)
    losses = ", ".join(
        f"{c} {statistics.mean(r['candidates'][c]['val_loss'] for r in runs):.4f}" for c in runs[0]["candidates"]
    )
    epochs = statistics.mean(r["epochs_run"] for r in runs)
    per_epoch = statistics.mean(r["seconds"] / r["epochs_run"] for r in runs)
    return f"{line}\n      shipped: {shipped}; val loss {losses}; {epochs:.1f} epochs, {per_epoch:.1f} s/epoch (all in)"


def run_dense(ds, overrides: dict, seed: int, out: Path, split: str) -> dict:
    cfg = ds.cfg.dense.model_copy(update={**overrides, "seed": seed})
    start = time.perf_counter()
    train_dense(ds.layout.features, out, cfg)
    return {**dense_scores(ds, out, split), "seconds": time.perf_counter() - start}


def run_finetune(ds, overrides: dict, dense_dir: Path, seed: int, out: Path, split: str) -> dict:
    ft = ds.cfg.finetune.model_validate({**ds.cfg.finetune.model_dump(), **overrides, "seed": seed})
    start = time.perf_counter()
    summary = train_finetune(ds.layout.manifest, dense_dir / MODEL_FILE, out, ds.cfg.backbone, ft)
    seconds = time.perf_counter() - start
    facts = {k: summary[k] for k in ("shipped", "candidates", "epochs_run")}
    return {**finetune_scores(ds, out, split), "seconds": seconds, **facts}


def chosen(recipes: dict, picked: list[str] | None) -> list[tuple[str, dict]]:
    """The recipes whose name has one of the `picked` texts (all when none given)."""
    return [(name, o) for name, o in recipes.items() if not picked or any(p in name for p in picked)]


def compare(names: list[str], seeds: list[int], only: str | None, dense: list[str] | None, tuned: list[str] | None):
    for name in names:
        ds = dataset(name)
        print(f"\n{name}: validation split, seeds {seeds} ({load()})", flush=True)
        print(
            summarise(
                "baseline: logistic regression, avg-pooled", [{**baseline_scores(ds, "validation"), "seconds": 0.0}]
            ),
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
            heads = dict(chosen(DENSE, dense) if only != "finetune" else [])
            if only != "dense":  # the fine-tunes start from this head
                heads.setdefault(FINETUNE_FROM, DENSE[FINETUNE_FROM])
            for recipe, overrides in heads.items():
                runs = [run_dense(ds, overrides, s, Path(tmp) / f"{recipe}-{s}", "validation") for s in seeds]
                print(summarise(f"dense: {recipe}", runs), flush=True)
            if only == "dense":
                continue
            for recipe, overrides in chosen(FINETUNE, tuned):
                runs = [
                    run_finetune(
                        ds, overrides, Path(tmp) / f"{FINETUNE_FROM}-{s}", s, Path(tmp) / f"ft-{s}", "validation"
                    )
                    for s in seeds
                ]
                print(summarise(f"finetune: {recipe}", runs), flush=True)


def final(names: list[str], seeds: list[int]) -> None:
    """params.yaml's recipe (dense and fine-tune, seeds varied together) scored on the test split."""
    for name in names:
        ds = dataset(name)
        print(f"\n{name}: TEST split, params.yaml's recipe, seeds {seeds} ({load()})", flush=True)
        print(
            summarise("baseline: logistic regression, avg-pooled", [{**baseline_scores(ds, "test"), "seconds": 0.0}]),
            flush=True,
        )
        dense, tuned = [], []
        with tempfile.TemporaryDirectory(prefix="bench-final-") as tmp:
            for s in seeds:
                dense.append(run_dense(ds, {}, s, Path(tmp) / f"dense-{s}", "test"))
                tuned.append(run_finetune(ds, {}, Path(tmp) / f"dense-{s}", s, Path(tmp) / f"ft-{s}", "test"))
        print(summarise("dense (params.yaml)", dense))
        print(summarise("finetune (params.yaml)", tuned), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [*DATASETS, *TWINS]
    ap.add_argument("--datasets", nargs="+", default=names, choices=names, metavar="NAME", help=", ".join(names))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--only", choices=["dense", "finetune"])
    ap.add_argument("--final", action="store_true", help="score params.yaml's recipe on the test split")
    ap.add_argument("--dense", nargs="+", metavar="TEXT", help="only the dense recipes whose name has TEXT")
    ap.add_argument("--finetune", nargs="+", metavar="TEXT", help="only the fine-tune recipes whose name has TEXT")
    args = ap.parse_args()
    print(machine(), flush=True)
    if args.final:
        final(args.datasets, args.seeds)
    else:
        compare(args.datasets, args.seeds, args.only, args.dense, args.finetune)


if __name__ == "__main__":
    main()
