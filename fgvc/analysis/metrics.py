"""Classification metrics from per-image probabilities, computed with scikit-learn.

Top-1/top-5, per-class accuracy (the recall of each class), the macro-averaged accuracy (the
mean of the per-class accuracies, so a rare class counts as much as a common one) and macro-F1
(the Herbarium 2020-2022 Kaggle metric), and the confusions between classes. Large label sets
(iNaturalist: 1,010 to 10,000 classes) make a dense confusion matrix pointless to draw and
costly to hold, so beyond ``FULL_CONFUSION_MAX`` classes only the most frequent confused pairs
are counted, from the misclassified images alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgvc.datasets.raw import DatasetError

FULL_CONFUSION_MAX = 50


@dataclass
class ClassificationMetrics:
    images: int
    num_classes: int
    top1: float
    top5: float | None  # None when there are <= 5 classes (it would be 100 %)
    macro_accuracy: float
    macro_f1: float
    per_class: list[dict]  # label, category_id, name, images, accuracy (%); classes with images
    confusion: np.ndarray | None  # full matrix (rows: true, columns: predicted) when small
    confused_pairs: list[dict]  # true, predicted (names), count; most frequent first


def compute_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                    category_ids: Sequence[str] | None = None, top_pairs: int = 20) -> ClassificationMetrics:
    """Metrics of ``probs`` (N x C) against integer ``labels`` (N,), all in %."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score, top_k_accuracy_score

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float32)
    num_classes = probs.shape[1]
    all_labels = np.arange(num_classes)
    predicted = probs.argmax(axis=1)
    category_ids = list(category_ids) if category_ids is not None else [str(i) for i in all_labels]
    present = np.unique(labels)
    recalls = recall_score(labels, predicted, labels=present, average=None, zero_division=0)
    counts = np.bincount(labels, minlength=num_classes)
    per_class = [{"label": int(k), "category_id": category_ids[k], "name": class_names[k],
                  "images": int(counts[k]), "accuracy": 100.0 * float(r)}
                 for k, r in zip(present, recalls, strict=True)]
    top5 = None
    if num_classes > 5:
        top5 = 100.0 * top_k_accuracy_score(labels, probs, k=5, labels=all_labels)
    confusion = None
    if num_classes <= FULL_CONFUSION_MAX:
        confusion = confusion_matrix(labels, predicted, labels=all_labels)
    wrong = labels != predicted
    pairs, pair_counts = np.unique(np.stack([labels[wrong], predicted[wrong]], axis=1), axis=0,
                                   return_counts=True) if wrong.any() else (np.zeros((0, 2)), [])
    order = np.argsort(-np.asarray(pair_counts), kind="stable")[:top_pairs]
    confused_pairs = [{"true": class_names[int(pairs[i][0])], "predicted": class_names[int(pairs[i][1])],
                       "count": int(pair_counts[i])} for i in order]
    return ClassificationMetrics(
        images=len(labels), num_classes=num_classes,
        top1=100.0 * float((predicted == labels).mean()) if len(labels) else 0.0,
        top5=top5,
        macro_accuracy=100.0 * float(recall_score(labels, predicted, labels=present,
                                                  average="macro", zero_division=0)),
        macro_f1=100.0 * float(f1_score(labels, predicted, average="macro", zero_division=0)),
        per_class=per_class, confusion=confusion, confused_pairs=confused_pairs)


def labels_for(ids: Sequence[str], answers: dict[str, str], class_ids: Sequence[str]) -> np.ndarray:
    """Integer labels (column order ``class_ids``) of ``ids`` from an id -> category id answer key;
    an id without an answer or with an unknown category is a clear error."""
    column = {c: i for i, c in enumerate(class_ids)}
    missing = [i for i in ids if i not in answers]
    if missing:
        raise DatasetError(f"{len(missing)} predicted image(s) have no answer, e.g. {missing[:3]}")
    unknown = sorted({answers[i] for i in ids} - set(column))
    if unknown:
        raise DatasetError(f"answers name unknown category id(s) {unknown[:3]}")
    return np.array([column[answers[i]] for i in ids], dtype=np.int64)


def answer_key(index, split: str) -> dict[str, str] | None:
    """The labels of ``split`` as image id -> category id: from the dataset itself when the split
    is labelled, else from an answer file shipped beside the data (the embedded dataset's
    ``solution/test_labels.csv``, kept apart as in a competition); None when there are none."""
    if index.is_labelled(split):
        return {s.image_id: index.category_ids[s.label] for s in index.split(split)}
    solution = Path(index.root) / "solution" / f"{split}_labels.csv"
    if not solution.is_file():
        return None
    import pandas as pd

    table = pd.read_csv(solution, dtype=str)
    if not {"id", "category_id"} <= set(table.columns):
        raise DatasetError(f"{solution}: expected columns id,category_id, got {list(table.columns)}")
    return dict(zip(table["id"], table["category_id"], strict=True))
