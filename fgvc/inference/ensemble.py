"""Average saved Predictions across crops, resolutions and models, with optional weights.

Members must predict the same images over the same classes in the same order; anything else is
refused with the member and the difference named, never silently realigned to a subset.

``how``: ``probs`` averages probabilities; ``log_probs`` averages log-probabilities (a geometric
mean); ``logits`` averages logits, as the authors' competition code does. A saved prediction
is p = softmax(z), so log p = z - logsumexp(z) differs from the logits z by one number per
image, and softmax ignores such a number: the weighted mean of log p followed by softmax *is*
the weighted mean of the logits followed by softmax. ``logits`` and ``log_probs`` are therefore
one computation on saved probabilities, exact up to their float16 storage: coarse below 6e-5,
and a probability stored as 0 (below about 3e-8) is read as 1e-8 before its logarithm.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import get_args

import numpy as np

from fgvc.errors import EnsembleError  # defined without numpy, for the CLI
from fgvc.inference.predictions import (
    PROBS,
    NpyRowWriter,
    Predictions,
    atomic_directory,
    check_output_path,
    chunk_rows,
    write_labels,
)
from fgvc.recipes.recipe import CombineName as Combine
from fgvc.suggest import did_you_mean

COMBINE_CHOICES: tuple[str, ...] = get_args(Combine)
LOG_SPACE = ("log_probs", "logits")  # averaged as log-probabilities (module docstring)
COMBINE_TITLES = {"probs": "the mean of their probabilities",
                  "log_probs": "the mean of their log-probabilities (a geometric mean)",
                  "logits": "the mean of their logits, then softmax"}
FLOOR = 1e-8  # the probability a float16 zero is read as before its logarithm


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
            how: Combine = "probs", out: Path | None = None, step: int | None = None
            ) -> Predictions:
    """Weighted mean of the members' probabilities, log-probabilities or logits (``how``, see
    the module docstring), rows in the first member's id order.

    Streamed: ``step`` rows at a time (default: about 4 MB of float32 per block) are read from
    every member, combined in float32 and written out, so memory holds a few blocks, never a
    member or the result whole. With ``out`` the result goes straight into that predictions
    directory (written atomically) and is returned memory-mapped; without, it is built in memory.
    """
    if how not in COMBINE_CHOICES:
        raise EnsembleError(f"combine: expected one of {', '.join(COMBINE_CHOICES)}, got "
                            f"{how!r}{did_you_mean(how, COMBINE_CHOICES)}")
    check_compatible(members)
    for name, preds in members:
        if preds.kept_top_k is not None:
            raise EnsembleError(f"{name} keeps only the top-{preds.kept_top_k} classes of each "
                                "image (predict.keep_top_k); an ensemble needs every class's "
                                "probability: predict again without keep_top_k")
    weights = list(weights) if weights is not None else [1.0] * len(members)
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise EnsembleError(f"weights {weights} must be {len(members)} non-negative numbers with "
                            "a positive sum")
    ref = members[0][1]
    n, c = len(ref.ids), len(ref.class_ids)
    step = step or chunk_rows(c)
    streams = [preds.dense_blocks(_rows_in_order(ref.ids, preds.ids), step)
               for _, preds in members]
    meta = {"ensemble": [{"name": name, "weight": w, **preds.meta}
                         for (name, preds), w in zip(members, weights, strict=True)],
            "combine": how}
    blocks = _combined_blocks(streams, np.asarray(weights, dtype=np.float32) / sum(weights), how)
    if out is None:
        probs = np.empty((n, c), dtype=np.float16)
        for start, block in zip(range(0, n, step), blocks, strict=False):
            probs[start:start + len(block)] = block
        return Predictions(list(ref.ids), list(ref.class_ids), probs, meta)
    check_output_path(out)
    with atomic_directory(out) as tmp:
        writer = NpyRowWriter(tmp / PROBS, (n, c), np.float16)
        for block in blocks:
            writer.write(block)
        writer.close()
        write_labels(tmp, ref.ids, ref.class_ids, meta)
    return Predictions.load(out)


def mean_of(parts: Sequence[np.ndarray], how: Combine = "probs") -> np.ndarray:
    """The unweighted mean of predictions of the same rows (one model at several resolutions),
    combined as ``combine`` combines members; one part is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    streams = [iter([np.array(part, dtype=np.float32)]) for part in parts]
    return next(_combined_blocks(streams, np.full(len(parts), 1 / len(parts), np.float32), how))


def _rows_in_order(ref_ids: list[str], ids: list[str]) -> np.ndarray | None:
    """Row of each of ``ref_ids`` in ``ids`` (``None`` when the order is the same)."""
    if ids == ref_ids:
        return None
    row_of = {image_id: i for i, image_id in enumerate(ids)}
    return np.fromiter((row_of[i] for i in ref_ids), dtype=np.int64, count=len(ref_ids))


def _combined_blocks(streams: list[Iterator[np.ndarray]], weights: np.ndarray, how: Combine
                     ) -> Iterator[np.ndarray]:
    """Each block: the weighted mean of the members' blocks, rows renormalised to sum 1."""
    for parts in zip(*streams, strict=True):
        total = np.zeros(parts[0].shape, dtype=np.float32)
        for part, weight in zip(parts, weights, strict=True):
            if how in LOG_SPACE:
                np.log(np.maximum(part, FLOOR, out=part), out=part)
            part *= weight
            total += part
        if how in LOG_SPACE:
            total -= total.max(axis=1, keepdims=True)
            np.exp(total, out=total)
        total /= total.sum(axis=1, keepdims=True)
        yield total


def load_members(paths: Sequence[str | Path]) -> list[tuple[str, Predictions]]:
    """Each path's predictions, named by the path: a predictions directory, a legacy ``.npz``,
    or a run folder (its ``predictions/``)."""
    members = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise EnsembleError(f"predictions not found: {path}")
        members.append((str(path), Predictions.load(_predictions_of(path))))
    return members


def _predictions_of(path: Path) -> Path:
    """``path`` itself, or the predictions directory of the run folder at ``path``."""
    from fgvc.runfolder import RunFolder

    folder = RunFolder(path)
    if not folder.recipe_path.is_file():
        return path
    if not folder.predictions_dir.exists():
        raise EnsembleError(f"{path} is a run folder without predictions (no "
                            f"{folder.predictions_dir.name}/): run `fgvc predict {path}` first")
    return folder.predictions_dir
