"""fgvc/io: the lowest floor (atomic writes, the one lock) and what the lock promises."""

from __future__ import annotations

import ast
import json
import os
import socket
from pathlib import Path

import pytest

from fgvc.io.lock import FolderLock, RunLockedError, wait_for_lock

IO = Path(__file__).resolve().parents[1] / "fgvc" / "io"


def test_io_imports_nothing_from_fgvc_but_errors():
    for path in IO.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] != "fgvc" or name == "fgvc.errors" \
                    or name.startswith("fgvc.io"), f"{path.name} imports {name}"


def test_a_held_folder_is_refused_naming_its_holder(tmp_path):
    with FolderLock(tmp_path, what="sweep folder") as held:
        record = json.loads(held.path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RunLockedError) as refused:
            FolderLock(tmp_path).acquire()
        assert f"is in use by pid {os.getpid()} on {socket.gethostname()}" in str(refused.value)
        assert "one process per run folder" in str(refused.value)
    assert not held.path.exists()  # deleted on release
    with FolderLock(tmp_path):  # and free again
        pass


def test_another_hosts_lock_is_refused_and_left_as_it_was(tmp_path):
    record = json.dumps({"pid": 4242, "host": "elsewhere", "since": "2026-01-01 00:00:00"})
    (tmp_path / ".lock").write_text(record)
    with pytest.raises(RunLockedError) as refused:
        FolderLock(tmp_path).acquire()
    message = str(refused.value)
    assert "in use by pid 4242 on elsewhere since 2026-01-01 00:00:00" in message
    assert "another host" in message and str(tmp_path / ".lock") in message
    assert (tmp_path / ".lock").read_text() == record
    with pytest.raises(RunLockedError):  # still refused: the record was kept
        FolderLock(tmp_path).acquire()


def test_wait_for_lock_excludes_others_and_keeps_its_file(tmp_path):
    from filelock import FileLock, Timeout

    path = tmp_path / "sub" / ".data.lock"
    with wait_for_lock(path), pytest.raises(Timeout):
        FileLock(path, blocking=False).acquire()
    assert path.exists()  # a waiter and the next generator share one inode
    FileLock(path, blocking=False).acquire().lock.release()
