"""Checkpoints that survive a crash mid-write and load without unpickling code.

``save_checkpoint`` writes a temporary file, fsyncs it and renames it over the target; with
``keep_previous`` the checkpoint it replaces is first kept as ``<name>.prev.pt``, so a latest
checkpoint that turns out truncated or corrupt (a disk that lied, a copy cut short) falls back
to the one before it, with a log line. Loading is always ``weights_only=True``; a file that
holds pickled Python objects is refused with one clear line.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from fgvc.errors import FgvcError
from fgvc.io.atomic import atomic_save, cause

log = logging.getLogger(__name__)


class CheckpointError(FgvcError, RuntimeError):
    """A checkpoint cannot be read; the message names the file and why."""


def previous_path(path: Path) -> Path:
    """Where the checkpoint ``path`` replaced is kept until the next one is complete."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, payload: dict[str, Any], *, keep_previous: bool = False) -> None:
    """Write ``payload`` atomically and durably; a kill or a full disk never leaves a torn
    checkpoint, and the earlier checkpoints stay intact. With ``keep_previous`` the checkpoint
    being replaced moves to ``.prev`` once the new one is complete (a kill between the two
    renames leaves ``.prev`` alone, which loading falls back to)."""
    def move_aside() -> None:
        if path.is_file():
            os.replace(path, previous_path(path))

    atomic_save(path, lambda f: torch.save(payload, f),
                before_replace=move_aside if keep_previous else None)


def describe_load_failure(err: BaseException) -> str:
    """One line for why ``torch.load(weights_only=True)`` failed."""
    if isinstance(err, pickle.UnpicklingError):
        return ("it holds pickled Python objects and fgvc never unpickles code "
                "(weights_only): re-save it as a plain state_dict or safetensors")
    return cause(err)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load ``path``; if it is unreadable and a ``.prev`` copy exists, fall back to it."""
    try:
        return _load(path)
    except CheckpointError as err:
        prev = previous_path(path)
        if not prev.is_file():
            raise
        log.warning("%s; falling back to the previous checkpoint %s", err, prev)
        return _load(prev)


def _load(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} not found") from None
    except Exception as err:  # noqa: BLE001 - any failure to load becomes one clear line
        raise CheckpointError(f"cannot load checkpoint {path}: "
                              f"{describe_load_failure(err)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot load checkpoint {path}: expected a mapping, got "
                              f"{type(state).__name__}")
    return state


def checkpoint_exists(path: Path) -> bool:
    """A checkpoint (or its kept previous copy) is there to resume from."""
    return path.is_file() or previous_path(path).is_file()


def remove_checkpoint(path: Path) -> None:
    path.unlink(missing_ok=True)
    previous_path(path).unlink(missing_ok=True)
