"""The one lock: ``filelock``'s ``flock`` on a file, and a folder lock that names its holder.

Both are ``filelock.FileLock`` (an ``fcntl.flock`` the kernel releases when the holder dies,
however it dies; a waiter that opened a lock file deleted under it retries on the new one).

- :func:`wait_for_lock` waits for, then holds, the lock on a file: it serialises work such as
  generating a dataset among concurrent processes. The file stays after release.
- :class:`FolderLock` is one writer per folder, refusing at once rather than waiting: the lock
  file ``<folder>/.lock`` holds its holder (pid, host, start time) for people and for the log.
  A lock file left by a dead process on this host is taken over with a log line; one naming
  another host cannot be checked from here and is refused with what to do; the file is deleted
  on release. ``filelock`` takes the lock and hands over its file (``on_acquired``, 3.30; from
  3.30 a contender that loses no longer empties the holder's file); the holder record, the
  takeover and the refusal messages are ours, because ``filelock`` records no holder for a
  native lock (its pid marker belongs to its soft fallback, which ``on_acquired`` turns off)
  and keeps the lock file on release.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from fgvc.errors import FgvcError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class RunLockedError(FgvcError, RuntimeError):
    """Another live process writes to this folder."""


@contextmanager
def wait_for_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on ``path`` (released by the kernel if the holder
    dies): serialises work such as generating a dataset among concurrent processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path, mode=0o644, thread_local=False):
        yield


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
        self._lock = FileLock(self.path, mode=0o644, thread_local=False, blocking=False,
                              on_acquired=self._claim)
        self._seen = b""

    def acquire(self) -> FolderLock:
        # filelock before 4.3 empties the file on taking the lock: read the record first.
        self._seen = self._read_file()
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLockedError(self._busy(_holder(self._read_file().decode("utf-8", "replace"))))\
                from None
        return self

    def _read_file(self) -> bytes:
        try:
            return self.path.read_bytes()[:4096]
        except OSError:
            return b""

    def _claim(self, fd: int) -> None:
        """With the lock just taken: check the previous holder's record, then write ours
        (raising here gives the lock back)."""
        host, pid = socket.gethostname(), os.getpid()
        found = os.pread(fd, 4096, 0) or self._seen
        previous = _holder(found.decode("utf-8", "replace"))
        if previous.get("pid") and previous.get("pid") != pid:
            if previous.get("host") not in (None, host):
                os.ftruncate(fd, 0)
                os.pwrite(fd, found, 0)  # the other host's record stays as it was
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

    def _busy(self, held: dict) -> str:
        return (f"{self.folder} is in use by pid {held.get('pid', '?')} on "
                f"{held.get('host', '?')} since {held.get('since', '?')}: one process per "
                f"{self.what}; wait for it to finish or stop it")

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still held: a waiter on this inode then retries
        self._lock.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["LOCK_NAME", "FolderLock", "RunLockedError", "wait_for_lock"]
