"""Pre-emption: SIGTERM (what SLURM and Kubernetes send before a kill) and SIGUSR1 (SLURM's
``--signal`` warning) stop training cleanly at the end of the current step, with a checkpoint
at that point of the epoch; outside training they stop the run at once (every other step of a
run is resumable as it stands). ``every_minutes`` also writes mid-epoch checkpoints on a timer.

A mid-epoch checkpoint holds, besides the model and optimizer, how far the epoch got (batches
done, running sums) and the random-number generators' states, so a resumed run draws the same
remaining batches and the same augmentations as an uninterrupted one. (torch and numpy are
imported where used: the CLI imports this module to catch ``Preempted`` and stays light.)
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(BaseException):
    """The run stopped on a signal; ``where`` is where training stands, if it was training.

    A ``BaseException``, as ``KeyboardInterrupt`` is: the signal can arrive inside any code, and
    every ``except Exception`` that turns a library's failure into one clear line (a model
    probe, a checkpoint read, a compile fallback) must let the stop through unchanged, so that
    the process exits as pre-empted and the run stays resumable."""

    def __init__(self, signum: int, run_dir: Path | None = None, where: str | None = None):
        self.signum = signum
        self.run_dir = run_dir
        self.where = where
        name = signal.Signals(signum).name
        at = f" at {where}" if where else ""
        cont = f"`fgvc resume {run_dir}`" if run_dir else "`fgvc run RECIPE --resume`"
        super().__init__(f"stopped by {name}{at}; {cont} continues from there")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


class _State:
    signum: int | None = None
    training: bool = False
    run_dir: Path | None = None


_state = _State()


def _on_signal(signum: int, _frame: Any) -> None:
    _state.signum = signum
    if not _state.training:  # nothing half-done to save: stop now
        raise Preempted(signum, _state.run_dir)


@contextmanager
def handle_signals(run_dir: Path | None = None) -> Iterator[None]:
    """Catch SIGTERM and SIGUSR1 for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _state.signum, _state.run_dir = None, run_dir
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.signum, _state.run_dir, _state.training = None, None, False


@contextmanager
def training() -> Iterator[None]:
    """While training, a signal only raises a flag, which the step loop polls (and the stage
    after each epoch's checkpoint)."""
    _state.training = True
    try:
        yield
    finally:
        _state.training = False


def pending_signal() -> int | None:
    return _state.signum


class CheckpointTimer:
    """Due every ``minutes`` (never when ``minutes`` is None)."""

    def __init__(self, minutes: float | None):
        self.seconds = None if minutes is None else minutes * 60.0
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.last >= self.seconds

    def reset(self) -> None:
        self.last = time.monotonic()


def rng_state() -> dict[str, Any]:
    """Every generator augmentation and dropout draw from, in a weights_only-loadable form."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
