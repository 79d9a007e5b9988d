"""The registry side of one execution: which version holds `champion` (on the model of each head and on its
image model, the one users serve), and the runs and versions an earlier track of the same execution left."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion

from pipeline.config import Config
from pipeline.contracts import Champion
from pipeline.layout import HEADS, SHIPPING_HEAD
from pipeline.tracking.lineage import EXECUTION_TAG
from pipeline.tracking.owner import PARENT_TAG

CHAMPION = "champion"
SERVED_TAG = "served_version"  # on a head's version: its image model's version under served_name


def model_name(cfg: Config) -> str:
    """One registered model per dataset: both heads are versions of it, side by side; `champion` names a shipped one."""
    return f"{cfg.data.name}-classifier"


def served_name(name: str) -> str:
    """The image-file model registered beside `name` (pipeline/tracking/served.py), one version per head's."""
    return f"{name}-served"


SHIPPED_TAG = "shipped"  # on the fine-tune stage's version: which candidate it ships (model/shipping.py)
VAL_LOSS_TAG = "val_loss"  # on every version: the model's validation log loss, what the champion is chosen by
DATA_TAG = "data.manifest_sha256"  # the split it was scored on: validation losses compare only on the same one


def beats(new: dict[str, str], held: dict[str, str] | None) -> bool:
    """Whether a shipped version (its tags) takes `champion` from the holder's: a lower validation log loss on the
    same split, or any when the holder was scored on other data (or is none). A tie keeps it: no churn. The test
    split chooses nothing: it is reported."""
    if held is None or held.get(DATA_TAG) != new.get(DATA_TAG):
        return True
    return float(new[VAL_LOSS_TAG]) < float(held[VAL_LOSS_TAG])


def _eligible(version: ModelVersion) -> bool:
    """A version the alias may name: a shipped model (the fine-tune stage's, chosen on validation) with its served
    image model (the tags say so; versions logged before, a dense head's, or aliased by hand, don't)."""
    return {SHIPPED_TAG, VAL_LOSS_TAG, SERVED_TAG} <= set(version.tags)


def _best_earlier(client: mlflow.MlflowClient, name: str, new: dict[str, int]) -> ModelVersion | None:
    """The eligible version of `name` but the `new` ones of the lowest validation loss on the newest one's data,
    the earliest on a tie (the one the strict rule kept); None when there is none."""
    earlier = sorted(
        (v for v in client.search_model_versions(f"name = '{name}'") if int(v.version) not in new.values()),
        key=lambda v: int(v.version),
    )
    earlier = [v for v in earlier if _eligible(v)]
    latest = earlier[-1].tags.get(DATA_TAG) if earlier else None
    same = [v for v in earlier if v.tags.get(DATA_TAG) == latest]
    return min(same, key=lambda v: (float(v.tags[VAL_LOSS_TAG]), int(v.version)), default=None)


def _described(version: ModelVersion, changed: bool) -> Champion:
    return Champion(
        version=int(version.version),
        head=version.tags["head"],  # log_head tags every version with its head
        shipped=version.tags[SHIPPED_TAG],
        val_loss=float(version.tags[VAL_LOSS_TAG]),
        test_accuracy=float(version.tags["test_accuracy"]),
        served_version=int(version.tags[SERVED_TAG]),
        changed=changed,
    )


def register_champion(name: str, versions: dict[str, int], workspace: bool) -> Champion | None:
    """Move `champion` to this execution's shipped model (the fine-tune stage's version) if it beats the one
    holding it on validation, on `name` and on its served image model alike. An execution outside the workspace
    (`workspace` False: an experiment, applied or not) moves nothing: what users serve changes only with what the
    project holds. The champion, None if none."""
    client = mlflow.MlflowClient()
    held_by = client.get_registered_model(name).aliases.get(CHAMPION)  # missing-alias errors differ by store
    if not workspace:
        held = None if held_by is None else client.get_model_version(name, held_by)
        return None if held is None or not _eligible(held) else _described(held, changed=False)
    # No alias although versions are left: it went with the version a reap deleted (owner.reap: a dead track's),
    # and the best one left holds it again.
    current = _best_earlier(client, name, versions) if held_by is None else client.get_model_version(name, held_by)
    holder = current.tags if current is not None and _eligible(current) else None  # an ineligible one is beaten
    shipped = client.get_model_version(name, str(versions[SHIPPING_HEAD]))
    moved = beats(shipped.tags, holder)
    chosen = shipped if moved or current is None else current  # (not moved: current holds it)
    # Both set every time (idempotent): a served alias missing beside the champion's comes back too.
    client.set_registered_model_alias(name, CHAMPION, chosen.version)
    client.set_registered_model_alias(served_name(name), CHAMPION, chosen.tags[SERVED_TAG])
    return _described(chosen, changed=moved)


@dataclass(frozen=True)
class TrackedRuns:
    """What one track logged: its parent run, each head's child run and its versions (mlflow.json's keys)."""

    parent_run_id: str
    child_run_ids: dict[str, str]  # head -> run id
    model_versions: dict[str, int]  # head -> version of `name`
    served_versions: dict[str, int]  # head -> version of served_name(name)


def logged_execution(experiment_id: str, execution: str, name: str) -> TrackedRuns | None:
    """The earliest finished track of `execution` whose every head has its versions; None when there is none.
    The same outputs tracked again reuse it."""
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{EXECUTION_TAG}` = '{execution}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    for parent in (r for r in runs if PARENT_TAG not in r.data.tags):
        children = {
            r.data.params.get("head"): r.info.run_id for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id
        }
        if set(children) != set(HEADS):
            continue
        found = {
            head: {v.name: int(v.version) for v in client.search_model_versions(f"run_id = '{run_id}'")}
            for head, run_id in children.items()
        }
        if all({name, served_name(name)} <= set(versions) for versions in found.values()):
            return TrackedRuns(
                parent.info.run_id,
                {head: children[head] for head in HEADS},
                {head: found[head][name] for head in HEADS},
                {head: found[head][served_name(name)] for head in HEADS},
            )
    return None
