"""Local Parquet / Arrow copies of a dataset, as the Hugging Face hub stores CUB, Cars, Flowers,
Pets, Food-101 and most others: one or more files per split, an image column (the hub's
``{"bytes": ..., "path": ...}`` struct, raw encoded bytes, or a path), a label column and
optionally an id column. No network: only files under the root are read.

Images stored as bytes stay in the file. A sample's path is then a row reference,
``<file>#<column>[<row>]``, and ``read_image_bytes`` fetches that one value when the image is
decoded: Parquet files a row group at a time (the last few row groups are kept per process,
``CACHE_BYTES``), Arrow files memory-mapped. Indexing reads only the label, id and image-path
columns, never the image bytes.

Class names come from the ``huggingface`` key of the schema metadata (a ``ClassLabel``
feature's ``names``; labels are then indices into it) or from ``dataset_info.json`` beside an
Arrow file; without them the label values are the category ids.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import as_image_id, as_integer, card_hint, path_mapping, read_json
from fgvc.datasets.integrity import check_label_range
from fgvc.datasets.registry import register

SUFFIXES = (".parquet", ".arrow")
REFERENCE = re.compile(r"^(?P<file>.+\.(?:parquet|arrow))#(?P<column>[^#\[\]]+)\[(?P<row>\d+)\]$")
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val"}
LABEL_NAMES = ("label", "labels", "fine_label", "class", "category", "category_id", "target", "y")
ID_NAMES = ("image_id", "id", "img_id")
PATH_NAMES = ("image_path", "path", "file_name", "filename", "file", "image", "img")
OPTIONS = {"files", "image_column", "label_column", "id_column"}
CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class RowReference:
    file: str  # relative to the dataset root
    column: str
    row: int


def make_reference(file: str, column: str, row: int) -> str:
    return f"{file}#{column}[{row}]"


def parse_reference(path: str) -> RowReference | None:
    """The row reference in a sample path, or ``None`` for an ordinary file path."""
    if "#" not in path:
        return None
    match = REFERENCE.match(path)
    return RowReference(match["file"], match["column"], int(match["row"])) if match else None


# ---- reading one image's bytes (in a DataLoader worker) ----

_tables: dict[Any, Any] = {}  # (Arrow file, column) -> memory-mapped bytes; Parquet file -> ParquetFile
_row_groups: OrderedDict[tuple, Any] = OrderedDict()  # (file, column, group) -> binary array


def _arrow_table(path: Path):
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:  # Hugging Face's save_to_disk writes the streaming format
        source.seek(0)
        return pa.ipc.open_stream(source).read_all()


def _field(column, name: str):
    """Field ``name`` of a chunked struct column, chunk by chunk: no copy, so a memory-mapped
    Arrow file stays on disk."""
    import pyarrow as pa

    return pa.chunked_array([chunk.field(name) for chunk in column.chunks], column.type.field(name).type)


def _binary(column):
    """The encoded bytes of an image column: a struct's ``bytes`` field, or the column itself."""
    import pyarrow as pa

    return _field(column, "bytes") if pa.types.is_struct(column.type) else column


def read_image_bytes(root: Path, ref: RowReference) -> bytes:
    """The encoded image in row ``ref.row`` of ``ref.column``; ``OSError`` when it is not there."""
    path = root / ref.file
    try:
        if path.suffix == ".arrow":
            key = (path, ref.column)
            if key not in _tables:
                _tables[key] = _binary(_arrow_table(path).column(ref.column))
            value = _tables[key][ref.row]
        else:
            value = _parquet_value(path, ref)
    except (KeyError, IndexError) as err:
        raise OSError(f"{path}: no image in column {ref.column!r} row {ref.row} ({err})") from None
    data = value.as_py() if hasattr(value, "as_py") else value
    if not data:
        raise OSError(f"{path}: column {ref.column!r} row {ref.row} holds no image bytes")
    return data


def _parquet_value(path: Path, ref: RowReference):
    import pyarrow.parquet as pq

    if path not in _tables:
        _tables[path] = pq.ParquetFile(str(path))
    parquet = _tables[path]
    meta, row = parquet.metadata, ref.row
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        if row < rows:
            break
        row -= rows
    else:
        raise IndexError(f"row {ref.row} beyond the file's {meta.num_rows} rows")
    key = (path, ref.column, group)
    if key not in _row_groups:
        struct = parquet.schema_arrow.field(ref.column).type
        columns = [f"{ref.column}.bytes"] if hasattr(struct, "get_field_index") else [ref.column]
        _row_groups[key] = _binary(parquet.read_row_group(group, columns=columns).column(0))
        while len(_row_groups) > 1 and sum(a.nbytes for a in _row_groups.values()) > CACHE_BYTES:
            _row_groups.popitem(last=False)
    _row_groups.move_to_end(key)
    return _row_groups[key][row]


# ---- indexing ----


def _split_of(rel: Path) -> str:
    """HF names: ``data/train-00000-of-00002.parquet``, ``train.parquet``,
    ``default/train/0000.parquet`` and ``train/data-00000-of-00001.arrow``."""
    stem = rel.stem.split("-")[0]
    name = rel.parent.name if stem in ("data", "") or stem.isdigit() else stem
    return SPLIT_ALIASES.get(name, name)


def discover(root: Path, files: dict[str, Any] | None) -> dict[str, list[Path]]:
    """Files per split: ``options.files`` (split -> file, glob or list) or found by name."""
    found: dict[str, list[Path]] = {}
    if files:
        for split, patterns in files.items():
            for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
                matches = sorted(root.glob(str(pattern)))
                outside = [m for m in matches if not m.resolve().is_relative_to(root.resolve())]
                if outside:
                    raise DatasetError(f"dataset.options.files.{split}: {pattern!r} leaves the "
                                       f"dataset root {root}; fix: give paths under the root")
                if not matches:
                    raise DatasetError(f"dataset.options.files.{split}: {pattern!r} matches no file "
                                       f"under {root}")
                found.setdefault(str(split), []).extend(matches)
        return found
    for path in sorted(p for suffix in SUFFIXES for p in root.rglob(f"*{suffix}")):
        found.setdefault(_split_of(path.relative_to(root)), []).append(path)
    if not found:
        raise DatasetError(f"parquet: no .parquet or .arrow file under {root} (expected e.g. "
                           "data/train-00000-of-00001.parquet, or options.files: {train: ...}); "
                           f"{card_hint('parquet')}")
    return found


def _schema(path: Path):
    if path.suffix == ".arrow":
        return _arrow_table(path).schema
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).schema_arrow


def hf_features(path: Path, schema) -> dict[str, Any]:
    """The ``features`` of the Hugging Face metadata in the schema or a ``dataset_info.json``."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        info = json.loads(raw).get("info", {}) if raw else {}
    except (json.JSONDecodeError, AttributeError):
        raise DatasetError(f"{path}: the 'huggingface' schema metadata is not a JSON object") from None
    sidecar = path.parent / "dataset_info.json"
    if not info and sidecar.is_file():
        info = read_json(sidecar)
    features = info.get("features", {}) if isinstance(info, dict) else {}
    return features if isinstance(features, dict) else {}


@dataclass(frozen=True)
class Columns:
    image: str
    label: str | None
    id: str | None
    image_kind: str  # "struct" (bytes + path), "bytes" or "path"


def pick_columns(path: Path, schema, features: dict[str, Any], options: dict[str, Any]) -> Columns:
    import pyarrow as pa

    names = list(schema.names)

    def given(key: str, default: str | None) -> str | None:
        value = options.get(key, default)
        if value is not None and value not in names:
            raise DatasetError(f"{path}: no column {value!r} (dataset.options.{key}); it has: "
                               f"{', '.join(names)}")
        return value

    def kind(name: str) -> str:
        t = schema.field(name).type
        if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
            return "struct"
        return "bytes" if pa.types.is_binary(t) or pa.types.is_large_binary(t) else "path"

    auto_image = next((n for n in names if kind(n) != "path"), None) or \
        next((n for n in PATH_NAMES if n in names), None)
    image = given("image_column", auto_image)
    if image is None:
        raise DatasetError(f"{path}: no image column found among {', '.join(names)}; fix: set "
                           "dataset.options.image_column")
    class_label = next((n for n, f in features.items()
                        if isinstance(f, dict) and f.get("_type") == "ClassLabel"), None)
    label = given("label_column", class_label or next((n for n in LABEL_NAMES if n in names), None))
    return Columns(image, label, given("id_column", next((n for n in ID_NAMES if n in names), None)),
                   kind(image))


def _read_columns(path: Path, columns: list[str]):
    if path.suffix == ".arrow":
        return _arrow_table(path).select([c.split(".")[0] for c in columns])
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).read(columns=columns)


def _bytes_present(path: Path, cols: Columns, table) -> list[bool]:
    """Which rows hold encoded bytes, from the Parquet statistics where they settle it."""
    n = table.num_rows
    if cols.image_kind == "path":
        return [False] * n
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(str(path)).metadata
        leaf = f"{cols.image}.bytes" if cols.image_kind == "struct" else cols.image
        nulls = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            stats = next((group.column(j).statistics for j in range(group.num_columns)
                          if group.column(j).path_in_schema == leaf), None)
            if stats is None or not stats.has_null_count:
                nulls = -1
                break
            nulls += stats.null_count
        if nulls == 0:
            return [True] * n
        column = _binary(_read_columns(path, [leaf]).column(0))
    else:
        column = _binary(_arrow_table(path).column(cols.image))
    return [v.is_valid for v in column]


def _category_names(features: dict[str, Any], label: str | None) -> list[str] | None:
    feature = features.get(label) if label else None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        return [str(n) for n in feature.get("names") or []] or None
    return None


def read_split_file(root: Path, path: Path, options: dict[str, Any],
                    categories: dict[str, str]) -> list[RawSample]:
    schema = _schema(path)
    features = hf_features(path, schema)
    cols = pick_columns(path, schema, features, options)
    wanted = [c for c in (cols.label, cols.id) if c]
    if cols.image_kind == "struct":
        wanted.append(f"{cols.image}.path")
    elif cols.image_kind == "path":
        wanted.append(cols.image)
    table = _read_columns(path, wanted)
    rel = path.relative_to(root).as_posix()
    names = _category_names(features, cols.label)
    for i, name in enumerate(names or []):
        categories.setdefault(str(i), name)
    labels = table.column(cols.label).to_pylist() if cols.label else [None] * table.num_rows
    ids = table.column(cols.id).to_pylist() if cols.id else None
    has_bytes = _bytes_present(path, cols, table)
    stored_paths = _stored_paths(table, cols)
    mapping = path_mapping(path, root, [p for p in stored_paths if p]) if stored_paths else None
    samples = []
    for row, label in enumerate(labels):
        entry = f"row {row}"
        if has_bytes[row]:
            where = make_reference(rel, cols.image, row)
        elif stored_paths and stored_paths[row]:
            where = mapping(stored_paths[row])
        else:
            raise DatasetError(f"{path}: {entry}: column {cols.image!r} holds neither image bytes nor "
                               "a path; fix: re-export the file with the images embedded")
        category = _category(label, names, path, entry, cols.label, categories)
        image_id = as_image_id(ids[row], path, entry, f"{cols.id} (the image id)") \
            if ids is not None else f"{path.stem}/{row}"
        samples.append(RawSample(where, category, image_id))
    return samples


def _stored_paths(table, cols: Columns) -> list[str | None] | None:
    if cols.image_kind == "struct":
        return _field(table.column(cols.image), "path").to_pylist()
    if cols.image_kind == "path":
        return table.column(cols.image).to_pylist()
    return None


def _category(label: Any, names: list[str] | None, path: Path, entry: str, column: str | None,
              categories: dict[str, str]) -> str | None:
    """A label value as a category id; ``None`` and ClassLabel's ``-1`` mark an unlabelled row.
    A ClassLabel index is an integer; without class names a label is an integer or text (its
    category id), never a fraction or a list."""
    if label is None or (names and label == -1):
        return None
    if names:
        index = as_integer(label, path, entry, f"{column} (ClassLabel index)")
        check_label_range(path, entry, index, 0, len(names) - 1, f"{column} (ClassLabel index)")
        label = index
    elif not isinstance(label, str):
        label = as_integer(label, path, entry, f"{column} (the label)")
    cid = str(label)
    categories.setdefault(cid, cid)
    return cid


@register("parquet", "local Parquet/Arrow files (Hugging Face hub copies): image bytes or paths, "
          "labels, class names from the file's metadata", num_classes=lambda options: None,
          options={"files": dict[str, str | list[str]], "image_column": str, "label_column": str,
                   "id_column": str})
def load_parquet(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Splits from the file names (``validation`` read as ``val``) or ``options.files``;
    ``options.image_column``, ``label_column`` and ``id_column`` override the detected columns."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise DatasetError(f"dataset.options: unknown option(s) {', '.join(sorted(unknown))} for "
                           f"parquet (known: {', '.join(sorted(OPTIONS))})")
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # a declared dependency, but installs without it exist
        raise DatasetError("parquet: needs the pyarrow package (pip install 'pyarrow>=14')") from None
    categories: dict[str, str] = {}
    splits: dict[str, list[RawSample]] = {}
    files = discover(root, options.get("files"))
    usual = {name: i for i, name in enumerate(("train", "val", "test"))}
    files = dict(sorted(files.items(), key=lambda item: (usual.get(item[0], len(usual)), item[0])))
    import pyarrow as pa

    for split, paths in files.items():
        splits[split] = []
        for path in paths:
            try:
                splits[split] += read_split_file(root, path, options, categories)
            except (pa.ArrowException, OSError) as err:
                raise DatasetError(f"{path}: not a readable Parquet/Arrow file ({err})") from None
    listed = ", ".join(p.relative_to(root).as_posix() for paths in files.values() for p in paths)
    return build_index("parquet", root, categories, splits, source=f"{root} ({listed})")
