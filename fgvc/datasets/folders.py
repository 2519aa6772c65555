"""Datasets laid out as folders or listed in a CSV: Herbarium 2019, ``imagefolder``, ``csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import read_dict_table, require_dir, require_file
from fgvc.datasets.registry import register

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_class_folders(root: Path, split_dir: str, image_id_with_folder: bool = True
                       ) -> tuple[list[RawSample], set[str]]:
    """``<split_dir>/<class>/<image>``: the class folder's name is the category id."""
    samples, classes = [], set()
    for class_dir in sorted(p for p in (root / split_dir).iterdir() if p.is_dir()):
        classes.add(class_dir.name)
        for image in _images_in(class_dir):
            rel = image.relative_to(root).as_posix()
            image_id = f"{class_dir.name}/{image.name}" if image_id_with_folder else image.stem
            samples.append(RawSample(rel, class_dir.name, image_id))
    return samples, classes


def _named(options: dict[str, Any], option: str, split: str, default: str) -> str:
    """What ``options[option]`` names for ``split`` (a folder or file), else ``default``."""
    named = options.get(option)
    return str(named.get(split, default)) if isinstance(named, dict) else default


def _check_options(name: str, options: dict[str, Any], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise DatasetError(f"dataset.options: unknown option(s) {', '.join(sorted(unknown))} for "
                           f"{name} (known: {', '.join(sorted(known)) or 'none'})")


@register("herbarium2019", "Herbarium 2019 (FGVC6): train/<category>/<id>.jpg folders", 683,
          options={"small": bool},
          markers=lambda o: ("small-train",) if o.get("small") else ("train", "validation"))
def load_herbarium2019(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Image ids repeat across category folders, so train/val samples are keyed by
    ``<category>/<file>``; test ids are the file names Kaggle expects (``00123.jpg``).
    ``options.small: true`` reads the resized ``small-*`` copy."""
    _check_options("herbarium2019", options, {"small"})
    prefix = "small-" if options.get("small") else ""
    layout = (f"{prefix}train/<category>/<id>.jpg, {prefix}validation/<category>/<id>.jpg, "
              f"{prefix}test/<id>.jpg")
    require_dir(root / f"{prefix}train", "herbarium2019", layout)
    train, categories = read_class_folders(root, f"{prefix}train")
    splits = {"train": train}
    if (root / f"{prefix}validation").is_dir():
        splits["val"], val_categories = read_class_folders(root, f"{prefix}validation")
        categories |= val_categories
    if (root / f"{prefix}test").is_dir():
        splits["test"] = [RawSample(p.relative_to(root).as_posix(), None, p.name)
                          for p in _images_in(root / f"{prefix}test")]
    bad = sorted(c for c in categories if not c.isdigit())
    if bad:
        raise DatasetError(f"herbarium2019: category folders must be numeric ids, found {bad[:3]} "
                           f"under {root / (prefix + 'train')}")
    return build_index("herbarium2019", root, {c: c for c in categories}, splits)


@register("imagefolder", "custom data: <split>/<class>/<image> folders", num_classes=lambda o: None,
          options={"splits": dict[str, str]},
          markers=lambda o: (_named(o, "splits", "train", "train"),))
def load_imagefolder(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """One folder per split (``train``, ``val``, ``test`` by default), one sub-folder per class;
    a split folder without class sub-folders holds unlabelled images."""
    _check_options("imagefolder", options, {"splits"})
    split_dirs = options.get("splits", {"train": "train", "val": "val", "test": "test"})
    require_dir(root / split_dirs.get("train", "train"), "imagefolder",
                "<root>/train/<class>/<image>, <root>/val/<class>/<image>")
    splits, categories = {}, set()
    for split, folder in split_dirs.items():
        if not (root / folder).is_dir():
            continue
        if any(p.is_dir() for p in (root / folder).iterdir()):
            splits[split], found = read_class_folders(root, folder)
            categories |= found
        else:
            splits[split] = [RawSample(p.relative_to(root).as_posix(), None, p.stem)
                             for p in _images_in(root / folder)]
    return build_index("imagefolder", root, {c: c for c in categories}, splits)


@register("csv", "custom data: one CSV per split with path,label columns", num_classes=lambda o: None,
          options={"files": dict[str, str]},
          markers=lambda o: (_named(o, "files", "train", "train.csv"),))
def load_csv_lists(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """``<split>.csv`` files with ``path,label`` (paths relative to the root) and an optional
    ``id`` column; an empty label marks an unlabelled image. ``options.files`` renames them."""
    _check_options("csv", options, {"files"})
    files = options.get("files", {s: f"{s}.csv" for s in ("train", "val", "test")})
    require_file(root / files.get("train", "train.csv"), "csv",
                 "<root>/train.csv with columns path,label[,id]")
    splits, categories = {}, set()
    for split, file_name in files.items():
        path = root / file_name
        if not path.is_file():
            continue
        samples = []
        for _line, row in read_dict_table(path, ["path"]):
            if "label" not in row:
                raise DatasetError(f"{path}:1: header lacks column label")
            label = (row.get("label") or "").strip() or None
            if label is not None:
                categories.add(label)
            image_id = (row.get("id") or "").strip() or row["path"]
            samples.append(RawSample(row["path"].strip(), label, image_id))
        splits[split] = samples
    return build_index("csv", root, {c: c for c in categories}, splits)
