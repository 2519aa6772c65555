"""Checkpoints that survive a crash mid-write, detect damage, and load without unpickling code.

``save_checkpoint`` writes a temporary file, fsyncs it and renames it over the target; with
``keep_previous`` the checkpoint it replaces is first kept as ``<name>.prev.pt``, so a latest
checkpoint that turns out truncated or corrupt (a disk that lied, a copy cut short) falls back
to the one before it, with one log line. Every checkpoint carries a checksum of its contents
(``fgvc.io.atomic.with_checksum``), checked on loading: torch's zip reader does not notice a
flipped bit in a tensor, which would otherwise resume silently with other weights.
Checkpoints written before the checksum existed load unchecked and without a warning (nothing
is wrong with them, and a line per load would only be noise). Loading is always
``weights_only=True``; a file that holds pickled Python objects is refused with one clear line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

from fgvc.errors import FgvcError
from fgvc.io.atomic import atomic_save, cause, checksum_problem, with_checksum

log = logging.getLogger(__name__)
UNPICKLER_MARK = "WeightsUnpickler error:"  # where torch's refusal says what it refused


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

    payload = with_checksum(payload)
    atomic_save(path, lambda f: torch.save(payload, f),
                before_replace=move_aside if keep_previous else None)


def describe_load_failure(err: BaseException) -> str:
    """One line for why ``torch.load(weights_only=True)`` failed: a file that pickles a real
    Python class (refused on purpose), or one that is damaged or no torch file at all."""
    if isinstance(err, pickle.UnpicklingError) and _pickles_real_object(str(err)):
        return ("it holds pickled Python objects and fgvc never unpickles code "
                "(weights_only): re-save it as a plain state_dict or safetensors")
    if isinstance(err, OSError) and err.errno is not None:
        return cause(err)
    text = str(err)
    if UNPICKLER_MARK in text:  # torch's advice around it is about trusting the file
        detail = text.rsplit(UNPICKLER_MARK, 1)[1].strip().split(". Please")[0]
        detail = detail.splitlines()[0] if detail else ""
    else:
        detail = cause(err)
    return (f"the file is damaged, incomplete or not a torch checkpoint "
            f"({type(err).__name__}{': ' + detail[:160] if detail else ''})")


def _pickles_real_object(message: str) -> bool:
    """The refused global names an object that exists (``argparse.Namespace``), not bytes a
    flipped bit garbled (``torch._utils._rebuilt_tensor_v2``); checked without importing."""
    if re.search(r"GLOBAL [\w.]+ whose module [\w.]+ is blocked", message):
        return True  # os, subprocess...: named on purpose
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+) was not", message)
    if not found:
        return False
    module_name, _, attribute = found.group(1).rpartition(".")
    if module_name == "__main__":  # the saving script's own class: nothing to look it up in
        return True
    module = sys.modules.get(module_name or "builtins")
    if module is not None:
        return hasattr(module, attribute)
    top = module_name.partition(".")[0]
    return bool(top.isidentifier()) and importlib.util.find_spec(top) is not None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load ``path``; if it is missing, unreadable or damaged and a ``.prev`` copy exists, load
    that one instead, with one warning saying so."""
    try:
        return _load(path)
    except CheckpointError as err:
        prev = previous_path(path)
        if not prev.is_file():
            raise
        try:
            state = _load(prev)
        except CheckpointError as prev_err:
            message = f"{err}; the previous checkpoint is no better: {prev_err}"
            raise CheckpointError(message) from None
        log.warning("%s; falling back to the previous checkpoint %s", err, prev)
        return state


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
    damage = checksum_problem(state)
    if damage is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {damage}")
    return state


def checkpoint_exists(path: Path) -> bool:
    """A checkpoint (or its kept previous copy) is there to resume from."""
    return path.is_file() or previous_path(path).is_file()


def remove_checkpoint(path: Path) -> None:
    path.unlink(missing_ok=True)
    previous_path(path).unlink(missing_ok=True)
