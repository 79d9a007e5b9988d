"""Which model the fine-tune stage ships: its start (the dense head on the frozen base), the fine-tuned model, the
midpoint of their weights (WiSE-FT, Wortsman et al. 2022) or the mean of their probabilities, whichever has the
lowest log loss on the validation images, scored through the same image path predict uses (so on what ships). The
test split takes no part: it is scored once, by evaluate.

Both ends exist once fine-tuning stops, so the choice costs three passes over the validation images. Far from
ImageNet, fine-tuning can overfit a few hundred images per class in one epoch while the start generalises better;
between the two, weights or probabilities, often beats both."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from sklearn.metrics import accuracy_score, log_loss

from pipeline.layout import CANDIDATES
from pipeline.model.inference import image_probabilities
from pipeline.model.parts import FinetuneParts, averaged, finetune_parts


@dataclass(frozen=True)
class Choice:
    shipped: str  # one of CANDIDATES
    validation: dict[str, dict[str, float]]  # candidate -> {"val_loss", "val_accuracy"}

    def why(self) -> str:
        """One sentence for logs, the summary and the report."""
        scores = ", ".join(f"{c} {s['val_loss']:.4f}" for c, s in self.validation.items())
        return f"lowest validation log loss of the candidates ({scores}; a tie goes to the cheaper)"


def choose(y: np.ndarray, probs: dict[str, np.ndarray]) -> Choice:
    """The candidate of lowest validation log loss (rounded to 6 places as recorded: the same bytes choose the
    same), the earlier of CANDIDATES on a tie."""
    labels = list(range(next(iter(probs.values())).shape[1]))
    validation = {
        c: {
            "val_loss": round(float(log_loss(y, np.clip(p, 1e-7, 1), labels=labels)), 6),
            "val_accuracy": round(float(accuracy_score(y, p.argmax(1))), 6),
        }
        for c, p in probs.items()
    }
    shipped = min(validation, key=lambda c: (validation[c]["val_loss"], CANDIDATES.index(c)))
    return Choice(shipped, validation)


def candidate_probabilities(
    model: keras.Model, start: list[np.ndarray], paths: list[str], n_classes: int, size: int
) -> dict[str, np.ndarray]:
    """Validation probabilities of each candidate; `model` holds the fine-tuned weights, `start` its weights before
    fine-tuning (left on `model` as they were found)."""
    tuned = model.get_weights()
    probs = {}
    for name, weights in (("dense", start), ("interpolated", midpoint(start, tuned)), ("finetune", tuned)):
        model.set_weights(weights)
        probs[name] = image_probabilities(model, paths, n_classes, size, tta_flip=False)
    probs["average"] = (probs["dense"] + probs["finetune"]) / 2
    return {c: probs[c] for c in CANDIDATES}


def midpoint(start: list[np.ndarray], tuned: list[np.ndarray]) -> list[np.ndarray]:
    """WiSE-FT's weights at 0.5: the frozen layers' are equal in both, so only the trained ones move."""
    return [(a + b) / 2 for a, b in zip(start, tuned)]


def average_model(start: keras.Model, tuned: keras.Model) -> keras.Model:
    """One image model whose output is the mean of the two models' probabilities, `start`'s branch called first
    (fine_tuned_part reads them in that order)."""
    image = keras.Input(tuned.inputs[0].shape[1:], name="image")
    mean = keras.layers.Average(name="candidates_mean")([start(image), tuned(image)])
    return keras.Model(image, mean, name="average")


def fine_tuned_part(model: keras.Model) -> FinetuneParts:
    """The parts of the fine-tune architecture inside a shipped model (for Grad-CAM): of the model itself, or of
    an average's second branch, its fine-tuned model."""
    branches = averaged(model)
    if branches:
        _, tuned = branches
        return finetune_parts(tuned)
    return finetune_parts(model)
