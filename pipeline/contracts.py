"""What passes between stages: one frozen, typed model per JSON file, owning its load and save (Made-With-ML's
model owns `save`/`load`; here each file does). `layout.py` says where a file is, this module what it holds.

Every model refuses unknown keys and wrong types when loaded, naming the file, so a file written by another
version of the pipeline fails where it is read, not three calls later. `save` writes the same bytes as the
dicts these files were before (sorted keys, 2-space indent): optional entries (`OMITTED`) are left out when
None, as they were, so an output's DVC hash is the same for the same values.

Who writes and who reads each file: docs/architecture.md, "Contracts".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError, model_serializer

from pipeline.config import BackboneConfig
from pipeline.files import write_json
from pipeline.layout import CANDIDATES

C = TypeVar("C", bound="Contract")  # typing.Self needs Python 3.11; the project runs on 3.10 too
M = TypeVar("M", bound=BaseModel)


class ContractError(ValueError):
    """A file between stages that does not hold what its writer writes."""


def read_model(model: type[M], path: Path | str) -> M:
    """A pydantic model's JSON file, validated; ContractError naming the file when it does not hold one."""
    try:
        return model.model_validate_json(Path(path).read_bytes())
    except ValidationError as err:
        raise ContractError(f"{path} is not a {model.__name__} file:\n{err}") from None


def write_model(obj: BaseModel, path: Path | str) -> None:
    """Atomically, replacing only a JSON file (files.write_json)."""
    write_json(path, obj.model_dump(mode="json"))


class Contract(BaseModel):
    """A JSON object between stages: its keys are the fields; OMITTED fields are absent when None."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    OMITTED: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if not (v is None and k in self.OMITTED)}

    @classmethod
    def load(cls: type[C], path: Path | str) -> C:
        return read_model(cls, path)

    def save(self, path: Path | str) -> None:
        write_model(self, path)


class Scores(Contract):
    """A model's validation scores at the epoch it keeps (rounded to 6 places)."""

    val_loss: float
    val_accuracy: float


class TrainingSummary(Contract):
    """models/<head>/summary.json: written by train_dense and train_finetune (model/training.py), read by
    evaluate, track, predict, the served model, the report and the summary. `classes`: the model's output order."""

    classes: list[str]
    epochs_run: int
    best_epoch: int
    val_loss: float
    val_accuracy: float
    class_weight: dict[str, float] | None  # class -> weight in the loss; None: unweighted
    # An ensemble of dense heads: how many, and each member's best epoch and epochs run.
    members: int | None = None
    member_best_epochs: list[int] | None = None
    member_epochs_run: list[int] | None = None
    # The fine-tune stage: which of layout.CANDIDATES it ships, and each one's validation scores.
    shipped: str | None = None
    candidates: dict[str, Scores] | None = None
    OMITTED = frozenset({"members", "member_best_epochs", "member_epochs_run", "shipped", "candidates"})

    @property
    def scores(self) -> Scores:
        return Scores(val_loss=self.val_loss, val_accuracy=self.val_accuracy)

    @property
    def all_epochs_run(self) -> int:
        """Epochs trained in all: every ensemble member's."""
        return sum(self.member_epochs_run) if self.member_epochs_run else self.epochs_run

    def shipped_line(self) -> str:
        """What the fine-tune stage's folder holds and why (validation only), in one line: logs, the summary."""
        if self.shipped is None or self.candidates is None:
            return "the fine-tuned model (saved before the choice among candidates existed)"
        losses = ", ".join(f"{c} {self.candidates[c].val_loss:.4f}" for c in CANDIDATES if c in self.candidates)
        return (
            f"{self.shipped} (validation log loss {losses}); fine-tuning ran {self.epochs_run} epoch(s), "
            f"best epoch {self.best_epoch}"
        )


class FeatureMeta(Contract):
    """features/meta.json: written by extract, read by train_dense, evaluate and lr_find."""

    backbone: BackboneConfig
    preprocessing: str
    feature_shape: tuple[int, ...]
    dtype: str
    classes: list[str]  # the manifest's, in label order
    counts: dict[str, int]  # split -> images
    manifest_sha256: str


class ClassMetrics(Contract):
    precision: float
    recall: float
    f1: float
    support: int


class HeadMetrics(Contract):
    """One model's scores on the test split (or another labelled folder): evaluation/metrics.py."""

    n: int
    accuracy: float
    precision: float  # two classes: of the second class; more: macro averages
    recall: float
    f1: float
    macro_f1: float
    confusion_matrix: list[list[int]]
    per_class: dict[str, ClassMetrics]
    roc_auc: float | None = None  # None: a class is absent, AUC is undefined
    OMITTED = frozenset({"roc_auc"})


class Metrics(RootModel[dict[str, HeadMetrics]]):
    """reports/metrics.json, head -> its metrics: written by evaluate, read by track and the summary."""

    model_config = ConfigDict(frozen=True)

    def __getitem__(self, head: str) -> HeadMetrics:
        return self.root[head]

    @classmethod
    def load(cls, path: Path | str) -> Metrics:
        return read_model(cls, path)

    def save(self, path: Path | str) -> None:
        write_model(self, path)


class Skipped(Contract):
    path: str  # relative to the folder copied
    reason: str


class DownloadRecord(Contract):
    """download.json: what was fetched, the same on every machine (where from: the execution record). Written by
    download (data/archive.py), read by track (the archive's sha256 identifies the data in MLflow)."""

    url: str
    kind: Literal["archive", "directory"]
    sha256: str | None = None  # an archive's
    size: int | None = None  # an archive's, in bytes
    skipped: list[Skipped] | None = None  # a folder's entries left out (hidden, not images), with the reason
    OMITTED = frozenset({"sha256", "size", "skipped"})


class PrepareSummary(Contract):
    """prepare.json: counts and quarantine reasons, written by prepare, read by the report and the summary."""

    images: int
    classes: list[str]
    per_split: dict[str, int]
    per_class: dict[str, dict[str, int]]  # class -> split -> images
    imbalance_ratio: float
    quarantined: int
    quarantine_reasons: dict[str, int]
    empty_class_folders: list[str]
    cross_split_duplicates: int
    layout_notes: list[str]


class ExecutionRecord(Contract):
    """execution/<stage>.json: what one execution of a stage measured (layout.DatasetLayout.execution says why
    apart from the outputs). Written by cli.execution_record, read by track."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # an older record's other facts are not needed
    seconds: float | None = None  # records from before they kept times have none of the three
    started_ms: int | None = None
    ended_ms: int | None = None
    source: str | None = None  # download: where the data came from
    devices: str | None = None  # extract
    images_per_second: dict[str, float] | None = None  # extract, per split
    epochs_run: int | None = None  # training stages, every ensemble member's epochs
    mlflow_live_run_id: str | None = None  # training stages: the run their epochs were logged to live
    OMITTED = frozenset({"seconds", "started_ms", "ended_ms", "source", "devices", "images_per_second", "epochs_run"})
    OMITTED |= {"mlflow_live_run_id"}

    @classmethod
    def load_if_any(cls, path: Path) -> ExecutionRecord:
        """The record, or an empty one: none when the stage came from DVC's cache, or never ran here."""
        return cls.load(path) if path.exists() else cls()


class ServedMeta(Contract):
    """The shipped model's record inside the served MLflow model (meta.json beside its model.keras): what the
    pyfunc model needs to turn image bytes into class probabilities (tracking/served.py)."""

    classes: list[str]
    image_size: int
    tta_flip: bool


class Champion(Contract):
    """The `@champion` version after a track (tracking/registry.py)."""

    version: int
    served_version: int
    head: str
    shipped: str | None
    val_loss: float
    test_accuracy: float  # reported, never used to choose
    changed: bool


class TrackRecord(Contract):
    """reports/mlflow.json: what the track stage logged (ids, versions, the champion); read by the summary."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str]  # head -> run id
    model_versions: dict[str, int]  # head -> version of <name>-classifier
    served_versions: dict[str, int]  # head -> version of <name>-classifier-served
    registered_model: str
    served_model: str
    champion: Champion | None
    workspace: bool
