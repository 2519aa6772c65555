"""Logging to the console and to a run's ``log.txt``: one setup for the ``fgvc`` command and
for ``fgvc.run()`` in a notebook or script.

Two promises, whoever starts the run:

- the console shows the run's progress lines: the CLI configures the root logger
  (:func:`setup_console`); a Python caller who configured no logging gets the same lines for
  the run's duration, and one who did keeps exactly the output their configuration gives;
- ``log.txt`` holds every record of the run at INFO and above, including those logged before
  the run folder exists (the precision warning, the dataset's warnings, its generation): they
  wait in memory and are written first when the file opens.

:class:`RunLog` does both around one run and removes what it added when the run ends, failed or
not. To see the run's INFO records whatever the caller's levels, it lowers the ``fgvc``
logger's level to INFO for the run and stops its propagation; the caller's own handlers then
receive, through :class:`_AsConfigured`, exactly the records their configuration let through
before, so lowering the level shows nothing new to them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

CONSOLE_FORMAT = "%(levelname)s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("matplotlib", "PIL")  # font cache and plugin chatter, not for the user
EARLY_RECORDS = 10_000  # records kept before log.txt opens; a run logs a few dozen there
TRACEBACK_ATTRIBUTE = "fgvc_traceback_file"  # set on an exception whose traceback was saved

F = TypeVar("F", bound=Callable)


def console_level(verbose: bool = False) -> int:
    """INFO (DEBUG with ``verbose``); under torchrun only the main process talks, the others
    report warnings and errors."""
    if int(os.environ.get("RANK", "0")) > 0:
        return logging.WARNING
    return logging.DEBUG if verbose else logging.INFO


def setup_console(verbose: bool = False) -> None:
    """The command line's logging: records at :func:`console_level` to standard error."""
    logging.basicConfig(level=console_level(verbose), format=CONSOLE_FORMAT, stream=sys.stderr)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)


class RunFileHandler(logging.Handler):
    """``log.txt``: records wait in memory until :meth:`open` names the file, then go there.
    When the disk is full a lost log line is not worth a logging traceback burying the one-line
    error that names the file that could not be written, so write errors are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FILE_FORMAT))
        self.pending: list[str] = []
        self.stream: IO[str] | None = None
        self.path: Path | None = None

    def open(self, path: Path) -> None:
        """Append to ``path`` (a resumed run continues its log), the waiting records first."""
        with self.lock:
            self.path = Path(path)
            self.stream = self.path.open("a", encoding="utf-8")
            self._write("".join(self.pending))
            self.pending = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a record whose arguments do not format: logging's own behaviour
            self.handleError(record)
            return
        if self.stream is not None:
            self._write(line)
        elif len(self.pending) < EARLY_RECORDS:
            self.pending.append(line)

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):
            self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        with self.lock:
            if self.stream is not None:
                with contextlib.suppress(OSError):
                    self.stream.close()
                self.stream = None
        super().close()


class _AsConfigured(logging.Handler):
    """Passes a record on to the handlers that had it before the run lowered the ``fgvc``
    logger's level, if the caller's levels would have let it through."""

    def __init__(self, fgvc_logger: logging.Logger, saved_level: int,
                 targets: list[logging.Handler]) -> None:
        super().__init__()
        self.fgvc_logger, self.saved_level, self.targets = fgvc_logger, saved_level, targets

    def level_before(self, name: str) -> int:
        """The effective level the record's logger had before the run began."""
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None and logger is not self.fgvc_logger:
            if logger.level:
                return logger.level
            logger = logger.parent
        return self.saved_level or logging.getLogger().level

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < self.level_before(record.name):
            return
        for handler in self.targets:
            if record.levelno >= handler.level:
                handler.handle(record)


class RunLog:
    """Console and ``log.txt`` logging for one run, as a context manager around it; call
    :meth:`open_file` once the run folder exists. Nested runs each get their own file."""

    active: list[RunLog] = []

    def __init__(self, logger_name: str = "fgvc") -> None:
        self.logger = logging.getLogger(logger_name)
        self.file = RunFileHandler()
        self._added: list[tuple[logging.Logger, logging.Handler]] = []
        self._saved: tuple[int, bool] = (self.logger.level, self.logger.propagate)

    def __enter__(self) -> RunLog:
        root = logging.getLogger()
        self._saved = (self.logger.level, self.logger.propagate)
        before = self.logger.getEffectiveLevel()
        targets = list(self.logger.handlers) + (list(root.handlers) if self.logger.propagate
                                                else [])
        if targets:  # the caller configured logging: their handlers see what they saw before
            console = _AsConfigured(self.logger, self._saved[0], targets)
            self._add(self.logger, console)
        else:  # nobody did: the CLI's console lines, for this run
            console = logging.StreamHandler(sys.stderr)
            console.setLevel(console_level())
            console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
            self._add(self.logger, console)
            self._add(root, console)  # other libraries' warnings, as Python would show them
        self._add(self.logger, self.file)
        self._add(root, self.file)
        self.logger.setLevel(min(before, logging.INFO))
        self.logger.propagate = False
        RunLog.active.append(self)
        return self

    def _add(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self._added.append((logger, handler))

    def open_file(self, path: Path) -> RunFileHandler:
        """Start writing ``path`` (``log.txt``), the records logged since the run began first."""
        self.file.open(path)
        return self.file

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc is not None:
            self._record_end(exc)
        for logger, handler in reversed(self._added):
            logger.removeHandler(handler)
        self._added.clear()
        self.logger.setLevel(self._saved[0])
        self.logger.propagate = self._saved[1]
        self.file.close()
        if self in RunLog.active:
            RunLog.active.remove(self)

    def _record_end(self, exc: BaseException) -> None:
        """Write why the run ended into log.txt (not the console, where the caller reports
        it): a failure with its full traceback, which the exception then names
        (:func:`saved_traceback`) so that the one-line report can point to it; a stop (a
        signal, Ctrl-C) in one line."""
        if self.file.stream is None:  # no run folder yet: the caller saves it elsewhere
            return
        failed = isinstance(exc, Exception)  # else KeyboardInterrupt, Preempted: stops
        level = logging.ERROR if failed else logging.WARNING
        exc_info = (type(exc), exc, exc.__traceback__) if failed else None
        args = ("failed" if failed else "stopped", type(exc).__name__, _first_line(exc))
        self.file.handle(self.logger.makeRecord(self.logger.name, level, __file__, 0,
                                                "the run %s: %s: %s", args, exc_info))
        if failed and saved_traceback(exc) is None:  # a nested run's own file comes first
            with contextlib.suppress(AttributeError):  # an exception class with __slots__
                setattr(exc, TRACEBACK_ATTRIBUTE, self.file.path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def error_folder() -> Path:
    """Where a failure outside a run folder keeps its traceback: ``$XDG_CACHE_HOME/fgvc/errors``
    (``~/.cache/fgvc/errors``), the user's cache as the XDG convention places it."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fgvc" / "errors"


def save_traceback(exc: BaseException) -> Path | None:
    """Write ``exc``'s full traceback (with the command line) to a new file in
    :func:`error_folder`, or in the temporary folder when that cannot be written; returns the
    file, or None when neither can be written."""
    text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n"
            f"Python {sys.version.split()[0]} on {sys.platform}\n\n"
            + "".join(traceback.format_exception(exc)))
    stamp = time.time()
    name = (f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}-"
            f"{int(stamp % 1 * 1e6):06d}-{os.getpid()}.txt")
    for folder in (error_folder(), Path(tempfile.gettempdir()) / "fgvc-errors"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def saved_traceback(exc: BaseException) -> Path | None:
    """The log.txt a run wrote ``exc``'s traceback to as it failed, if it did."""
    return getattr(exc, TRACEBACK_ATTRIBUTE, None)


def open_run_file(path: Path) -> RunFileHandler:
    """``log.txt`` of the innermost run under way (see :func:`run_logged`)."""
    if not RunLog.active:
        raise RuntimeError("open_run_file: no run under way (run_recipe is @run_logged)")
    return RunLog.active[-1].open_file(path)


def run_logged(function: F) -> F:
    """Run ``function`` inside a :class:`RunLog`: whatever it logs reaches the console and,
    once it calls :func:`open_run_file`, log.txt, from its first record on."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with RunLog():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
