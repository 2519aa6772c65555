"""One writer per folder: a lock file naming its holder (pid, host, start time).

The lock is an ``fcntl.flock`` on ``<folder>/.lock`` held for the run's lifetime, so the kernel
releases it when the holder dies however it dies; the file's contents are for people and for
the log. A lock left by a dead process on this host is taken over with a log line; one naming
another host cannot be checked from here and is refused with what to do. Hand-written because
the stdlib has the primitive (``fcntl``) but no lock-with-holder-and-takeover.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process writes to this folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(text: str) -> dict:
    try:
        found = json.loads(text)
        return found if isinstance(found, dict) else {}
    except ValueError:
        return {}


class FolderLock:
    """``with FolderLock(folder):`` -- only one process at a time past this point."""

    def __init__(self, folder: Path, what: str = "run folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        host, pid = socket.gethostname(), os.getpid()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                raise RunLockedError(self._busy(held)) from None
            # The file may have been deleted by the holder that released it just before us.
            if os.path.exists(self.path) and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                break
            os.close(fd)
        previous = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if previous.get("pid") and previous.get("pid") != pid:
            if previous.get("host") not in (None, host):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise RunLockedError(self._busy(previous) + " (another host: fgvc cannot tell "
                                     f"whether it still runs; delete {self.path} if it does not)")
            if previous.get("host") == host and _alive(int(previous["pid"])):
                log.warning("%s names pid %s, which is alive but holds no lock; taking over",
                            self.path, previous["pid"])
            else:
                log.warning("taking over the stale lock %s of pid %s on %s (no longer running)",
                            self.path, previous.get("pid"), previous.get("host"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": pid, "host": host,
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def _busy(self, held: dict) -> str:
        return (f"{self.folder} is in use by pid {held.get('pid', '?')} on "
                f"{held.get('host', '?')} since {held.get('since', '?')}: one process per "
                f"{self.what}; wait for it to finish or stop it")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

