"""The one map of the project's files: params.yaml, and where each stage reads and writes under data/<name>/.

dvc.yaml spells the same paths with `${item}`, the dataset of each foreach stage (a test checks that the two
agree); flows, the predict command and the tests take them from here. Imports nothing heavy, so orchestration
code can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]  # this checkout
PARAMS_FILE = Path("params.yaml")  # relative: the working directory's, as DVC and the CLIs use it
DATA_ROOT = Path("data")
LOCK_FILE = Path("dvc.lock")
DVC_FILE = Path("dvc.yaml")
# The source stage's records, one <name>.json per dataset: a fixed folder, not under data/<name>/, so that DVC
# can write it before every dataset's name is known to be a safe folder name.
SOURCES = DATA_ROOT / "sources"
# The dataset names dvc.yaml's stages loop over (its `vars:`), written only after every name was checked: DVC
# builds each stage's output paths from these names and deletes those paths before running the stage, so a name
# straight from params.yaml (`../../x`) would let any `dvc repro -s` delete outside the project.
DATASET_LIST = DATA_ROOT / "datasets.yaml"
DATASET_LIST_KEY = "dataset_names"  # the list's key in DATASET_LIST: dvc.yaml's `foreach: ${dataset_names}`
DEFAULT_DATASET_KEY = "default_dataset"  # data.name, checked: dvc.yaml's top-level `data/${default_dataset}/…`
# Entries of data/ that are not a dataset's folder: a dataset may not take their names.
RESERVED_NAMES = (SOURCES.name,)


def source_record(name: str) -> Path:
    return SOURCES / f"{name}.json"


def stage_id(stage: str, dataset: str) -> str:
    """DVC's name of `stage` for one dataset: dvc.yaml runs each stage but `source` once per entry of `datasets`."""
    return f"{stage}@{dataset}"


def stage_parts(target: str) -> tuple[str, str | None]:
    """(stage, dataset) of a DVC stage name: "train_dense@cats" -> ("train_dense", "cats"); "source" -> (…, None)."""
    stage, sep, dataset = target.partition("@")
    return stage, dataset if sep else None


HEADS = ("dense", "finetune")  # the two models, in training order (the dense head is the cheaper one)
# The stage whose model ships (predict's default, @champion): the fine-tune stage saves the best on validation of
# its start, the fine-tuned model and their average (model/shipping.py).
SHIPPING_HEAD = "finetune"
# What it chooses among, in order of cost (an average runs two networks): a tie goes to the earlier. "dense":
# fine-tuning's start, which scores as the dense head does; "interpolated": the mean of the start's and the
# fine-tuned weights; "average": the mean of their probabilities.
CANDIDATES = ("dense", "finetune", "interpolated", "average")
SPLITS = ("train", "validation", "test")

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.csv"
QUARANTINE_FILE = "quarantine.csv"
DUPLICATES_FILE = "duplicates.csv"
FEATURE_META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"

# What the files hold, where more than one place reads them:
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc")  # per head in metrics.json
SUMMARY_METRICS = ("best_epoch", "epochs_run", "val_loss", "val_accuracy")  # of a head's summary.json

# The evaluation plots' file names in DatasetLayout.plots: evaluation/plots.py and explain.py write them, the
# report shows them, the track stage logs them; dvc.yaml spells them (a test checks it names only these).
ROC_PNG = "roc.png"  # both heads in one figure, two-class datasets only


def confusion_png(head: str) -> str:
    return f"confusion_{head}.png"


def curves_png(head: str) -> str:
    return f"curves_{head}.png"


def gradcam_png(head: str) -> str:
    return f"gradcam_{head}.png"


def misclassified_png(head: str) -> str:
    return f"misclassified_{head}.png"


def misclassified_csv(head: str) -> str:
    """The gallery's images, in its order: file, true and predicted class, confidence."""
    return f"misclassified_{head}.csv"


def predictions_csv(head: str) -> str:
    """Actual and predicted class per test image: `dvc plots show`'s confusion matrix."""
    return f"predictions_{head}.csv"


def roc_csv(head: str) -> str:
    return f"roc_{head}.csv"


def plot_files(head: str) -> tuple[str, ...]:
    """Every plot file name of `head` (gradcam: the fine-tuned model's only), and ROC_PNG."""
    named = (confusion_png, curves_png, gradcam_png, misclassified_png, misclassified_csv, predictions_csv, roc_csv)
    return (*(name(head) for name in named), ROC_PNG)


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one dataset's pipeline outputs; `root` is data/<name> (relative to the project)."""

    root: Path

    @classmethod
    def of(cls, name: str, project: Path | str = ".") -> DatasetLayout:
        return cls(Path(project) / DATA_ROOT / name)

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def download_info(self) -> Path:
        return self.root / "download.json"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def manifest(self) -> Path:
        return self.prepared / MANIFEST_FILE

    @property
    def quarantine(self) -> Path:
        return self.prepared / QUARANTINE_FILE

    @property
    def prepare_summary(self) -> Path:
        return self.root / "prepare.json"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def model_dir(self, head: str) -> Path:
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        return self.root / "models" / head

    def model_file(self, head: str) -> Path:
        return self.model_dir(head) / MODEL_FILE

    @property
    def finetune_checkpoint(self) -> Path:
        """train_finetune's per-epoch checkpoint (a killed run resumes from it; gone once the stage succeeds).
        Outside the model folder: DVC deletes a stage's outputs before running it. Not an output, no dep."""
        return self.root / "checkpoints" / "finetune"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def plots(self) -> Path:
        return self.reports / "plots"

    @property
    def offline_plots(self) -> Path:
        """`dvc plots show` rendered to PNGs with an index.html: python -m pipeline.evaluation.offline_plots."""
        return self.reports / "plots_offline"

    @property
    def metrics(self) -> Path:
        return self.reports / METRICS_FILE

    @property
    def report(self) -> Path:
        return self.reports / REPORT_FILE

    @property
    def mlflow_record(self) -> Path:
        return self.reports / "mlflow.json"

    def lr_find(self, head: str) -> Path:
        """Stem of the learning-rate range test's files for `head` (.csv, .png, .json): python -m pipeline.lr_find."""
        return self.root / "lr_find" / head

    def execution(self, stage: str) -> Path:
        """What one execution of `stage` measured (seconds, img/s, devices, where the data came from).

        Not a stage output and no stage's dependency: these facts differ from run to run and machine to
        machine, and must not change the hashes DVC compares (dvc.yaml lists them as top-level metrics)."""
        return self.root / "execution" / f"{stage}.json"
