"""Progress of long loops: a tqdm bar on a terminal, periodic log lines everywhere else.

A run under nohup, SLURM or ``| tee`` has no terminal, and a bar that redraws itself is either
invisible there or fills the log with carriage returns. So when standard error is not a
terminal every loop logs one line at each 10 % step and at least every 30 s: done/total,
images/s, the loss where there is one, elapsed time and the loop's ETA. tqdm has no such
"log lines" mode, hence this small wrapper. ``FGVC_PROGRESS=bar|log|off`` overrides the choice.

The images/s of a line is the pace after the loop's first item: the first batch carries the
loop's start-up (loader workers, kernel selection, a cache's first fill), which is not the
throughput the loop achieves. Also here: the run's clock (:func:`process_started`) and ETA
(:func:`run_eta`), which prices the work left in the whole run, not only its training.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("fgvc.progress")

LOG_EVERY_SECONDS = 30.0
LOG_EVERY_FRACTION = 0.10
WATCH_EVERY_SECONDS = 5.0  # how often the watchdog looks whether a line is due


def format_duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``: short and sortable, like tqdm's own."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_mode() -> str:
    """``bar`` on a terminal, ``log`` otherwise; ``FGVC_PROGRESS`` overrides."""
    forced = os.environ.get("FGVC_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    stream = sys.stderr
    return "bar" if stream is not None and stream.isatty() else "log"


class Progress:
    """Iterate ``iterable`` (or call :meth:`update`) and report progress.

    ``count_images(n)`` adds images to the throughput when an item is a batch; without it each
    item counts as one image. ``set_postfix(loss=...)`` shows the loss on the bar and in the
    log line.
    """

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 unit: str = "it", mode: str | None = None, **tqdm_kwargs: Any):
        self.iterable = iterable
        self.desc = desc
        self.unit = unit
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.mode = mode or progress_mode()
        self.done = 0
        self.images = 0
        self._counted_images = False
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self._last_log = self.start
        # (time, images) when the first item ended, and when the latest ended: the pace
        self._first: tuple[float, int] | None = None
        self._latest: tuple[float, int] | None = None
        self._next_fraction = LOG_EVERY_FRACTION
        self._bar = None
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        if self.mode == "bar":
            from tqdm import tqdm

            tqdm_kwargs.setdefault("leave", False)
            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **tqdm_kwargs)

    # -- the iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("Progress without an iterable: call update() instead")
        self._start_watchdog()
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Progress:
        self._start_watchdog()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_images(self, n: int) -> None:
        self._counted_images = True
        self.images += int(n)

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self._counted_images:
            self.images += n
        now = time.perf_counter()
        self._latest = (now, self.images)
        if self._first is None:
            self._first = self._latest
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            self._maybe_log(now)

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- log lines ------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def images_per_second(self, now: float | None = None) -> float:
        """Images per second between the end of the first item and the end of the latest;
        before a second item ends, over the time since the start (the only figure there is)."""
        now = time.perf_counter() if now is None else now
        if self._first is not None and self._latest is not None and self._latest[0] > self._first[0]:
            return (self._latest[1] - self._first[1]) / (self._latest[0] - self._first[0])
        return self.images / max(now - self.start, 1e-9)

    def eta(self, elapsed: float | None = None) -> float:
        if not self.total or not self.done:
            return float("nan")
        elapsed = self.elapsed if elapsed is None else elapsed
        return elapsed / self.done * (self.total - self.done)

    def line(self, now: float | None = None) -> str:
        elapsed = (time.perf_counter() if now is None else now) - self.start
        if self.total:
            head = f"{self.done}/{self.total} {self.unit} ({100.0 * self.done / self.total:.0f}%)"
        else:
            head = f"{self.done} {self.unit}"
        parts = [head, f"{self.images_per_second(self.start + elapsed):.1f} img/s"]
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total:
            parts.append(f"ETA {format_duration(self.eta(elapsed))}")
        return f"{self.desc}: " + ", ".join(parts)

    def _start_watchdog(self) -> None:
        """In log mode, a daemon thread that logs when 30 s pass without a line: one batch of a
        big model (or the DataLoader's start) can take longer than that."""
        if self.mode != "log" or self._stop is not None:
            return
        self._stop = threading.Event()
        threading.Thread(target=self._watch, args=(self._stop,), daemon=True,
                         name=f"progress {self.desc}").start()

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(min(WATCH_EVERY_SECONDS, LOG_EVERY_SECONDS)):
            with self._lock:
                now = time.perf_counter()
                if now - self._last_log >= LOG_EVERY_SECONDS:
                    self._last_log = now
                    log.info("%s", self.line(now))

    def _maybe_log(self, now: float) -> None:
        with self._lock:
            self._maybe_log_locked(now)

    def _maybe_log_locked(self, now: float) -> None:
        due = now - self._last_log >= LOG_EVERY_SECONDS
        if self.total:
            fraction = self.done / self.total
            if fraction + 1e-12 >= self._next_fraction:
                due = True
                while self._next_fraction <= fraction + 1e-12:
                    self._next_fraction += LOG_EVERY_FRACTION
        if due:
            self._last_log = now
            log.info("%s", self.line(now))


def progress(iterable: Iterable | None = None, desc: str = "", **kwargs: Any) -> Progress:
    """A :class:`Progress` over ``iterable``: a bar on a terminal, log lines otherwise."""
    return Progress(iterable, desc=desc, **kwargs)


def process_started() -> float:
    """When this process started, as a ``time.perf_counter()`` value: the start of an ``fgvc``
    command's wall time, interpreter start-up and imports included. Linux reads it from
    ``/proc/self/stat``; elsewhere (or if that fails) it is the time ``fgvc`` was imported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # seconds after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED
    return time.perf_counter() - max(age, 0.0)


_IMPORTED = time.perf_counter()


@dataclass(frozen=True)
class Work:
    """A part of a run still to do: ``images`` network inputs (crops counted) at ``resolution``,
    forward and backward (``training``) or forward only."""

    images: int
    resolution: int
    training: bool = False


def run_eta(work: Iterable[Work], train_seconds: float, forward_seconds: float,
            resolution: int) -> float:
    """Seconds left in the run: every part of ``work`` priced at the seconds per image measured
    at ``resolution`` (``train_seconds`` for a training pass, ``forward_seconds`` for a forward
    pass), scaled by its pixel count (resolution squared), the cost model of a convolutional
    network. Loader start-up and the report are not priced: an estimate, not a promise."""
    return sum(w.images * (train_seconds if w.training else forward_seconds)
               * (w.resolution / resolution) ** 2 for w in work)
