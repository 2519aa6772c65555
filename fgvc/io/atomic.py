"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file is written to a temporary sibling, flushed (and fsynced where losing it would cost
work: checkpoints, predictions), then renamed over the target, which POSIX makes atomic. Any
failure, a full disk included, removes the temporary file and becomes one ``WriteError`` naming
the path and the cause. ``torch.save`` reports a failed write as an opaque "unexpected pos"
error from its zip writer, so the file object handed to writers records the real ``OSError``.
Hand-written because no maintained library covers "temp + fsync + rename + clean-up + the
true cause" for arbitrary writers (``torch.save``, ``numpy.savez``, text) in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fgvc.errors import FgvcError

TEMP_MARK = ".tmp-"
CHECKSUM_KEY = "checksum"  # in a checkpoint payload: "blake2b:<hex>" of the rest of it


class WriteError(FgvcError, RuntimeError):
    """A file could not be written; the message names the path and the cause."""


class RunFileError(FgvcError, RuntimeError):
    """A file of a run folder is unreadable or corrupt; the message names it."""


def temp_path(path: Path) -> Path:
    """The temporary sibling of ``path`` this process writes before renaming."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder`` (recursively); call only while
    holding the folder's lock, so no live writer's file is removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(f".*{TEMP_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def cause(err: BaseException) -> str:
    """'no space left on device' rather than '[Errno 28] No space left on device: ...'."""
    if isinstance(err, OSError) and err.errno is not None:
        return os.strerror(err.errno).lower()
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class _RecordingFile:
    """A binary file that remembers the first OSError of a write, so that a writer which
    swallows it (torch's zip writer does) can still be reported with the true cause."""

    def __init__(self, f: IO[bytes]):
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return write_chunk(self._f, data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_chunk(f: IO, data: Any) -> int:
    """The one place bytes reach the file (tests replace it to simulate a full disk)."""
    return f.write(data)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, fsync: bool = False,
                newline: str | None = None,
                before_replace: Callable[[], None] | None = None,
                exclusive: bool = False) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is "w" (text) or "wb" (binary); ``fsync`` makes the data durable before the
    rename; ``before_replace()`` runs once the new content is complete, just before the
    rename (to move the old file aside); ``exclusive`` never replaces an existing ``path``: the
    new file is linked in only where none exists at that moment (``FileExistsError`` otherwise),
    so two writers that both checked beforehand cannot overwrite each other. On any failure (or
    an interrupt) the temporary file is removed and ``path`` is left as it was; an ``OSError``
    (or a writer's error caused by one) becomes ``WriteError``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Closed below, after the caller's writes, a flush and an fsync.
        raw = (open(tmp, "wb") if "b" in mode  # noqa: SIM115
               else open(tmp, "w", newline=newline, encoding="utf-8"))  # noqa: SIM115
    except OSError as err:
        raise WriteError(f"cannot write {path}: {cause(err)}") from None
    recorder = _RecordingFile(raw)
    try:
        try:
            yield recorder
            raw.flush()
            if fsync:
                os.fsync(raw.fileno())
        finally:
            raw.close()
        if before_replace is not None:
            before_replace()
        if exclusive:
            os.link(tmp, path)  # atomic, and fails where path exists
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, FileExistsError) and exclusive:
            raise
        real = recorder.error or (err if isinstance(err, OSError) else None)
        if real is not None and isinstance(err, Exception):  # a stop (signal, Ctrl-C) stays one
            raise WriteError(f"cannot write {path}: {cause(real)}") from None
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes, *, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` (text or bytes) atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", fsync=fsync) as f:
        f.write(data)


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None], *,
                fsync: bool = True, before_replace: Callable[[], None] | None = None) -> None:
    """``writer(file)`` writes binary content (``torch.save``, ``np.savez``); ``path`` is
    replaced only once it is complete and, by default, durable."""
    with atomic_open(path, "wb", fsync=fsync, before_replace=before_replace) as f:
        writer(f)


def payload_digest(payload: Any) -> str:
    """BLAKE2b of a nested payload as it reads back from disk: every mapping key, sequence
    position, plain value (``repr``) and tensor (dtype, shape, bytes), so a flipped bit or a lost
    entry anywhere changes it. Hand-written because ``torch.save`` keeps no checksum that
    ``torch.load`` checks (a flipped bit in a tensor loads silently)."""
    import torch

    digest = hashlib.blake2b(digest_size=32)
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{where}:{flat.dtype}{tuple(value.shape)};".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            digest.update(f"{where}:{{{len(value)};".encode())
            stack.extend((f"{where}/{key!r}", item) for key, item in reversed(value.items()))
        elif isinstance(value, (list, tuple)):  # a tuple may read back as either
            digest.update(f"{where}:[{len(value)};".encode())
            stack.extend((f"{where}/{i}", item) for i, item in reversed(list(enumerate(value))))
        else:
            digest.update(f"{where}={value!r};".encode())
    return digest.hexdigest()


def with_checksum(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` and, under ``CHECKSUM_KEY``, the digest of the rest, to check on loading (a
    checksum the payload still carries, read back with ``torch.load``, is replaced)."""
    rest = {key: value for key, value in payload.items() if key != CHECKSUM_KEY}
    return {**rest, CHECKSUM_KEY: f"blake2b:{payload_digest(rest)}"}


def checksum_problem(state: dict[str, Any]) -> str | None:
    """Remove ``state``'s checksum and say what is wrong when the rest no longer matches it; a
    state without one (written before fgvc kept one, or by another program) passes unchecked."""
    saved = state.pop(CHECKSUM_KEY, None)
    if saved is None or saved == f"blake2b:{payload_digest(state)}":
        return None
    return "its contents differ from the checksum saved with it (bits changed on disk or in a copy)"


def read_json(path: Path) -> Any:
    """JSON from a run file; a torn or corrupt one is named in the error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path} is corrupt ({cause(err)}); delete it and run "
                           "`fgvc run --resume` to recompute it") from None


__all__ = ["CHECKSUM_KEY", "RunFileError", "WriteError", "atomic_open", "atomic_save",
           "atomic_write", "cause", "checksum_problem", "payload_digest", "read_json",
           "remove_stale_temps", "temp_path", "with_checksum"]
