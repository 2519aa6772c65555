"""Average saved Predictions across crops, resolutions and models, with optional weights.

Members must predict the same images over the same classes in the same order; anything else is
refused with the member and the difference named, never silently realigned to a subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from fgvc.errors import EnsembleError  # defined without numpy, for the CLI
from fgvc.inference.predictions import Predictions

Combine = Literal["probs", "log_probs"]


def check_compatible(members: Sequence[tuple[str, Predictions]]) -> None:
    if not members:
        raise EnsembleError("an ensemble needs at least one member")
    ref_name, ref = members[0]
    ref_ids = set(ref.ids)
    for name, preds in members[1:]:
        if preds.class_ids != ref.class_ids:
            if set(preds.class_ids) == set(ref.class_ids):
                raise EnsembleError(f"{name} and {ref_name} order their classes differently")
            only = sorted(set(preds.class_ids) ^ set(ref.class_ids))
            raise EnsembleError(f"{name} and {ref_name} predict different classes "
                                f"({len(preds.class_ids)} vs {len(ref.class_ids)}; e.g. {only[:3]} "
                                "in one only)")
        ids = set(preds.ids)
        if ids != ref_ids or len(preds.ids) != len(ids):
            extra, missing = sorted(ids - ref_ids), sorted(ref_ids - ids)
            raise EnsembleError(f"{name} and {ref_name} cover different images: {len(extra)} only "
                                f"in {name} (e.g. {extra[:3]}), {len(missing)} only in {ref_name} "
                                f"(e.g. {missing[:3]})")


def combine(members: Sequence[tuple[str, Predictions]], weights: Sequence[float] | None = None,
            how: Combine = "probs") -> Predictions:
    """Weighted mean of the members' probabilities (or of their log-probabilities, a geometric
    mean), rows in the first member's id order."""
    check_compatible(members)
    weights = list(weights) if weights is not None else [1.0] * len(members)
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise EnsembleError(f"weights {weights} must be {len(members)} non-negative numbers with "
                            "a positive sum")
    ref = members[0][1]
    total = np.zeros(ref.probs.shape, dtype=np.float64)
    for (_, preds), weight in zip(members, weights, strict=True):
        row_of = {image_id: i for i, image_id in enumerate(preds.ids)}
        rows = preds.probs[[row_of[i] for i in ref.ids]].astype(np.float64)
        total += weight * (np.log(np.clip(rows, 1e-8, None)) if how == "log_probs" else rows)
    total /= sum(weights)
    if how == "log_probs":
        total = np.exp(total - total.max(axis=1, keepdims=True))
    total /= total.sum(axis=1, keepdims=True)
    return Predictions(
        ids=list(ref.ids), class_ids=list(ref.class_ids), probs=total.astype(np.float16),
        meta={"ensemble": [{"name": name, "weight": w, **preds.meta}
                           for (name, preds), w in zip(members, weights, strict=True)],
              "combine": how})


def load_members(paths: Sequence[str | Path]) -> list[tuple[str, Predictions]]:
    members = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise EnsembleError(f"predictions file not found: {path}")
        members.append((str(path), Predictions.load(path)))
    return members
