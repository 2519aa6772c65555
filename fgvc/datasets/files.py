"""Reading the metadata files datasets ship: whitespace tables, TSV/CSV, JSON and MATLAB .mat.

Text is read as UTF-8 with an optional byte-order mark, with LF or CRLF line endings.
Every reader reports a missing file with the layout it expected and where the dataset's card
is, and a malformed line with its file and line number: never a bare KeyError or IndexError.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError

VOTE_SAMPLE = 32  # images checked on disk per candidate mapping

def card_hint(name: str) -> str:
    """Where the user reads about a dataset: the card command works wherever fgvc is installed."""
    return f"`fgvc datasets card {name}` says where to get it and the expected layout"


def require_file(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{dataset}: missing {path} (expected layout: {layout}); "
                           f"{card_hint(dataset)}")
    return path


def require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{dataset}: missing folder {path} (expected layout: {layout}); "
                           f"{card_hint(dataset)}")
    return path


def read_table(path: Path, columns: int, *, sep: str | None = None, max_split: int | None = None,
               comment: str | None = None) -> list[tuple[int, list[str]]]:
    """Rows of a header-less text table as ``(line number, fields)``.

    ``sep=None`` splits on whitespace; ``max_split`` keeps spaces in the last field (class names
    such as NABirds' ``"Black-necked Stilt"``). A row with fewer than ``columns`` fields is an
    error naming the file and line.
    """
    rows = []
    split_at = -1 if max_split is None else max_split
    strip = sep is not None or max_split is not None  # whitespace splitting leaves none inside
    with _text(path) as f:
        lines = f.read().splitlines()
    for number, text in enumerate(lines, start=1):
        if not text or text.isspace() or (comment and text.lstrip().startswith(comment)):
            continue
        fields = text.split(sep, split_at)
        if len(fields) < columns:
            raise DatasetError(f"{path}:{number}: expected {columns} fields, got "
                               f"{len(fields)}: {text!r}")
        rows.append((number, [x.strip() for x in fields] if strip else fields))
    return rows


def read_dict_table(path: Path, required: list[str], delimiter: str = ",") -> list[tuple[int, dict]]:
    """Rows of a table with a header, as ``(line number, row)``; checks the required columns."""
    with _text(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                               f"(has: {', '.join(header)})")
        rows = []
        for number, row in enumerate(reader, start=2):
            if any(row.get(c) in (None, "") for c in required):
                raise DatasetError(f"{path}:{number}: empty or missing value in "
                                   f"{', '.join(c for c in required if not row.get(c))}")
            rows.append((number, row))
        return rows


@contextmanager
def _text(path: Path, newline: str | None = None) -> Iterator[Any]:
    """A UTF-8 text file; bytes that are not UTF-8, or a line csv cannot parse, are a
    DatasetError naming the file."""
    try:
        with path.open(encoding="utf-8-sig", newline=newline) as f:
            yield f
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DatasetError(f"{path}: not a readable table ({err})") from None


def as_int(value: str, path: Path, line: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path}:{line}: {what} must be an integer, got {value!r}") from None


def as_float(value: str, path: Path, line: int, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{path}:{line}: {what} must be a number, got {value!r}") from None


def as_floats(values: list[str], path: Path, line: int, what: str) -> tuple[float, ...]:
    try:
        return tuple(map(float, values))
    except ValueError:
        return tuple(as_float(v, path, line, what) for v in values)  # names the bad value


def as_integer(value: Any, file: object, entry: str, what: str, whole_floats: bool = True) -> int:
    """A label, category id, image number or flag as an integer: a Python or numpy integer, a
    whole float (MATLAB stores numbers as doubles: ``3.0``; ``whole_floats=False`` for JSON,
    which writes integers as such) or decimal text (``"3"``), also in a one-element array.
    Anything else (``1.5``, NaN, ``"abc"``, a list, ``true``, null) is a DatasetError naming
    the file and entry: truncating it would give a wrong label silently."""
    import numpy as np

    item = _scalar(value)
    whole = not isinstance(item, (bool, np.bool_)) and (
        isinstance(item, numbers.Integral)
        or (whole_floats and isinstance(item, numbers.Real) and float(item).is_integer())
        or (isinstance(item, str) and _DECIMAL.fullmatch(item.strip()) is not None))
    if not whole:
        raise DatasetError(f"{file}: {entry}: {what} must be an integer, got {_shown(value)}")
    return int(item)


def as_number(value: Any, file: object, entry: str, what: str) -> float:
    """A box coordinate or other measure as a finite float (a one-element array too); anything
    else is a DatasetError naming the file and entry."""
    item = _scalar(value)
    if isinstance(item, numbers.Real) and not isinstance(item, bool) and math.isfinite(item):
        return float(item)
    raise DatasetError(f"{file}: {entry}: {what} must be a number, got {_shown(value)}")


def as_text(value: Any, file: object, entry: str, what: str) -> str:
    """A file name read from metadata: one string, not a number, null or a list of them."""
    if isinstance(value, str):
        return value
    raise DatasetError(f"{file}: {entry}: {what} must be text, got {_shown(value)}")


def _scalar(value: Any) -> Any:
    """The value of a one-element array (how a squeezed MATLAB struct may still hold one)."""
    import numpy as np

    return value.item() if isinstance(value, np.ndarray) and value.size == 1 else value


def as_image_id(value: Any, file: object, entry: str, what: str = "image id") -> str:
    """An image id as its text: ids are integers or text; anything else (a list, an object,
    null, a boolean, a fraction) is a DatasetError naming the file and entry, not its repr."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise DatasetError(f"{file}: {entry}: {what} must be an integer or text, got {_shown(value)}")


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def _shown(value: Any) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json(path: Path) -> Any:
    """A JSON file, parsed by the standard library rather than orjson: on a 1 GB
    iNaturalist-2021-shaped file orjson's parse takes less than half the user time, but its own
    document buffer raises the loader's peak memory by 2.5 GB (4.0 to 6.5 GB above the start at
    2.7 M images), and the page faults of that memory leave no consistent CPU gain."""
    try:
        with _text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def read_mat(path: Path, variables: list[str]) -> dict[str, Any]:
    """MATLAB variables, squeezed, structs as objects with attribute access."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # noqa: BLE001 - scipy raises many types for broken files
        raise DatasetError(f"{path}: not a readable MATLAB file ({err})") from None
    missing = [v for v in variables if v not in data]
    if missing:
        raise DatasetError(f"{path}: lacks variable(s) {', '.join(missing)} "
                           f"(has: {', '.join(k for k in data if not k.startswith('__'))})")
    return {v: data[v] for v in variables}


def mat_records(value: Any) -> list[Any]:
    """A squeezed MATLAB struct array as a list, also when it holds a single element."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def mat_field(record: Any, field: str, path: Path, index: int) -> Any:
    if not hasattr(record, field):
        raise DatasetError(f"{path}: entry {index + 1} lacks field {field!r}")
    return getattr(record, field)


class PathMapping:
    """How a ``file_name`` listed in a metadata file becomes a path under the root: ``prefix``
    (a folder, with its slash) put before it, or its first folder renamed by ``renames``.
    ``all`` maps a whole list at once (millions of names at iNaturalist 2021 scale: the
    unchanged list itself when nothing changes)."""

    __slots__ = ("prefix", "renames")

    def __init__(self, prefix: str = "", renames: dict[str, str] | None = None) -> None:
        self.prefix, self.renames = prefix, renames

    def __call__(self, name: str) -> str:
        if self.renames:
            head, _, rest = name.partition("/")
            return f"{self.renames[head]}/{rest}" if head in self.renames and rest else name
        return self.prefix + name

    def all(self, names: list[str]) -> list[str]:
        if self.renames:
            return [self(name) for name in names]
        prefix = self.prefix
        return [prefix + name for name in names] if prefix else names


def path_mapping(listed_in: Path, root: Path, file_names: list[str],
                 folders: tuple[str, ...] = (), renames: dict[str, str] | None = None) -> PathMapping:
    """How a ``file_name`` listed in the metadata file ``listed_in`` becomes a path under the
    root: the candidate under which most of up to ``VOTE_SAMPLE`` names spread through the
    whole list exist (ties, and no image on disk: the first), so that one missing file cannot
    misplace the others.

    Candidates, in order: each of ``folders`` as a prefix, the root itself, the metadata file's
    folder, and the root with the first folder renamed by ``renames`` (torchvision's copies).
    """
    candidates = [PathMapping(folder.rstrip("/") + "/") for folder in folders]
    candidates.append(PathMapping())
    if listed_in.parent != root:
        candidates.append(PathMapping(listed_in.parent.relative_to(root).as_posix() + "/"))
    if renames:
        candidates.append(PathMapping(renames=renames))
    step = max(1, len(file_names) // VOTE_SAMPLE)
    probe = file_names[::step][:VOTE_SAMPLE]
    scores = [sum((root / mapping(f)).is_file() for f in probe) for mapping in candidates]
    return candidates[scores.index(max(scores))]
