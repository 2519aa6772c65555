"""COCO-style JSON datasets: iNaturalist 2017-2021, Herbarium 2020-2022 and any later edition.

One reader, parameterised by the annotation files of each split. The editions name their keys
differently (Herbarium 2022: ``image_id`` on images, ``category_id`` and ``scientificName`` on
categories; a test file that is a bare list of images): ``KEYS`` lists the accepted spellings.

``file_name`` is relative to the dataset root (iNaturalist), to the JSON's own folder
(Herbarium 2020/2021) or to an images folder (Herbarium 2022: ``train_images/``); copies such as
torchvision's rename the top folder (``train_val2018/`` -> ``2018/``). Which of these holds is
decided by a vote over images spread through the whole list (``path_mapping``), so a missing
file does not misplace the others. A split's JSON without ``annotations`` (a competition's test
set) yields unlabelled samples.
"""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path, PurePosixPath
from typing import Any

from fgvc.datasets.base import (
    DatasetError,
    DatasetIndex,
    RawColumns,
    RawSample,
    build_index,
    paused_gc,
)
from fgvc.datasets.columns import all_distinct, int64_ids
from fgvc.datasets.files import (
    PathMapping,
    as_image_id,
    as_integer,
    as_text,
    card_hint,
    path_mapping,
    read_json,
    require_dir,
    require_file,
)
from fgvc.datasets.integrity import problem
from fgvc.datasets.registry import register

KEYS = {"image id": ("id", "image_id"), "category id": ("id", "category_id"),
        "category name": ("name", "scientificName")}


def _field(obj: Any, what: str, path: Path, entry: str, position: int) -> Any:
    for key in KEYS.get(what, (what,)):
        if isinstance(obj, dict) and key in obj:
            return obj[key]
    raise DatasetError(f"{path}: {entry} #{position} lacks {' or '.join(map(repr, KEYS.get(what, (what,))))}")


def _images(data: Any, json_path: Path) -> list:
    if isinstance(data, list):  # Herbarium 2022's test_metadata.json
        return data
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: expected a JSON object with an 'images' list "
                           "(or a list of images)")
    return data["images"]


def _read_categories(data: Any, json_path: Path, categories: dict[str, str]) -> None:
    """Category ids are integers (COCO's), also written as decimal text; anything else is
    refused naming the entry, so an annotation's category that is not an integer is unknown."""
    for i, cat in enumerate((data.get("categories") if isinstance(data, dict) else None) or []):
        cid = _field(cat, "category id", json_path, "category", i)
        as_integer(cid, json_path, f"category #{i}", "category id", whole_floats=False)
        cid = str(cid)
        name = str(next((cat[k] for k in KEYS["category name"] if k in cat), cid))
        if categories.setdefault(cid, name) != name:
            problem("conflict", json_path, f"category {cid}", f"named {categories[cid]!r} "
                    f"elsewhere and {name!r} here", "give each category id one name")


def _read_labels(data: Any, json_path: Path, image_ids: set[str],
                 boxes: dict[str, tuple[float, float, float, float]]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for i, ann in enumerate((data.get("annotations") if isinstance(data, dict) else None) or []):
        image_id = as_image_id(_field(ann, "image_id", json_path, "annotation", i), json_path,
                               f"annotation #{i}", "image_id")
        # checked against the categories, whose ids are integers: anything else is unknown
        category = str(_field(ann, "category_id", json_path, "annotation", i))
        entry = f"annotation #{i} (image {image_id})"
        if image_id not in image_ids:
            problem("unknown_reference", json_path, entry, f"image {image_id} is not in 'images'",
                    "remove the annotation or add the image")
        if labels.setdefault(image_id, category) != category:
            problem("conflict", json_path, entry, f"image {image_id} is annotated with both "
                    f"category {labels[image_id]} and {category}",
                    "keep one annotation per image (fgvc reads single-label classification)")
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4:
            boxes[image_id] = tuple(float(v) for v in bbox)
    return labels


@paused_gc
def read_coco_split(json_path: Path, root: Path, categories: dict[str, str],
                    boxes: dict[str, tuple[float, float, float, float]],
                    folders: tuple[str, ...] = (), renames: dict[str, str] | None = None,
                    image_folder: str | None = None) -> list[RawSample] | RawColumns:
    """Samples of one COCO-style file; adds its categories and boxes to the given mappings.
    ``image_folder`` (the ``coco`` adapter's ``images`` option): the folder ``file_name`` is
    relative to, given by the user, so it is not voted on."""
    data = read_json(json_path)
    images = _images(data, json_path)
    _read_categories(data, json_path, categories)

    def mapping_for(names: list[str]) -> PathMapping:
        if image_folder is not None:
            return PathMapping(image_folder.strip("/") + "/")
        return path_mapping(json_path, root, names, folders, renames)

    columns = _columns(data, images, boxes, mapping_for)
    if columns is not None:
        return columns
    ids = [as_image_id(_field(image, "image id", json_path, "image", i), json_path, f"image #{i}")
           for i, image in enumerate(images)]
    names = [_file_name(image, json_path, i) for i, image in enumerate(images)]
    labels = _read_labels(data, json_path, set(ids), boxes)
    labelled = bool(labels)
    mapping = mapping_for(names)
    samples = []
    for image_id, file_name in zip(ids, names, strict=True):
        if labelled and image_id not in labels:
            raise DatasetError(f"{json_path}: image {image_id} ({file_name}) has no annotation; "
                               "fix: annotate it or remove it from 'images'")
        samples.append(RawSample(mapping(file_name), labels.get(image_id), image_id))
    return samples


def _file_name(image: Any, json_path: Path, position: int) -> str:
    return as_text(_field(image, "file_name", json_path, "image", position), json_path,
                   f"image #{position}", "file_name")


def _columns(data: Any, images: list, boxes: dict[str, tuple[float, float, float, float]],
             mapping_for: Any) -> RawColumns | None:
    """The split as columns by whole-list comprehensions, several times faster than the loop
    over entries at 2.7 M images; ids stay as the file gives them (``RawColumns`` reads integers
    as their text). ``None`` for anything but a regular file (a key spelt otherwise, a repeated
    id or annotation, an annotation of an unknown image, an image without one, ...): the
    entry-by-entry reader then judges it and names the entry."""
    annotations = (data.get("annotations") if isinstance(data, dict) else None) or []
    try:  # map with itemgetter: a quarter faster than the equivalent comprehensions
        ids = list(map(itemgetter("id"), images))
        names = list(map(itemgetter("file_name"), images))
        annotated = list(map(itemgetter("image_id"), annotations))
        category_ids = list(map(itemgetter("category_id"), annotations))
    except (KeyError, TypeError):
        return None
    if set(map(type, ids)) not in ({int}, {str}) or set(map(type, annotated)) - {int, str}:
        return None  # ids of mixed or other kinds (null, a list, ...): named entry by entry
    ints = int64_ids(ids)  # COCO's integer ids: one array, checked by sorting, not a set
    distinct = all_distinct(ints) if ints is not None else (
        len(set(map(type, ids))) == 1 and len(set(ids)) == len(ids))
    if set(map(type, names)) - {str} or not distinct:
        return None
    if not annotations:
        category_ids = [None] * len(ids)
    elif annotated != ids:  # iNaturalist lists them in the images' order: no lookup needed
        labels = dict(zip(annotated, category_ids, strict=True))
        if len(labels) != len(annotated) or not labels.keys() <= set(ids):
            return None
        category_ids = [labels.get(i) for i in ids]
    if annotations:
        numbers = int64_ids(category_ids)
        if numbers is not None:
            category_ids = numbers
        elif not set(map(type, category_ids)) <= {int, str}:
            return None  # an image without annotation, a null, a list, ...: entry by entry
    for ann in [a for a in annotations if "bbox" in a]:
        bbox = ann["bbox"]
        if isinstance(bbox, list) and len(bbox) == 4:
            boxes[str(ann["image_id"])] = tuple(float(v) for v in bbox)
    mapping = mapping_for(names)
    return RawColumns(mapping.all(names), category_ids, ids if ints is None else ints,
                      ids_unique=True)


def load_coco(name: str, root: Path, split_files: dict[str, str],
              optional: tuple[str, ...] = ("test",), folders: dict[str, tuple[str, ...]] | None = None,
              renames: dict[str, str] | None = None,
              image_folders: dict[str, str] | None = None) -> DatasetIndex:
    """Read every split's JSON; a split listed in ``optional`` may be absent.
    ``image_folders``: split -> the folder its ``file_name``s are relative to, as given."""
    categories: dict[str, str] = {}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    splits: dict[str, list[RawSample] | RawColumns] = {}
    layout = ", ".join(f"{s}: {f}" for s, f in split_files.items())
    for split, file_name in split_files.items():
        path = root / file_name
        if split in optional and not path.exists():
            continue
        require_file(path, name, layout)
        splits[split] = read_coco_split(path, root, categories, boxes,
                                        (folders or {}).get(split, ()), renames,
                                        (image_folders or {}).get(split))
    if not categories:
        raise DatasetError(f"{name}: no 'categories' in {layout} under {root}")
    found = ", ".join(split_files[s] for s in splits)
    return build_index(name, root, categories, splits, boxes, source=f"{root} ({found})")


def _check_options(name: str, options: dict[str, Any]) -> None:
    unknown = set(options) - {"files"}
    if unknown:
        raise DatasetError(f"dataset.options: unknown option(s) {sorted(unknown)} for {name}")


# The top folder of iNaturalist's file names -> the folder torchvision's INaturalist reads.
TORCHVISION_RENAMES = {"train_val_images": "2017", "train_val2018": "2018", "train_val2019": "2019",
                       "train": "2021_train", "train_mini": "2021_train_mini", "val": "2021_valid"}


def _inaturalist_adapter(year: int, files: dict[str, str], classes: int, summary: str,
                         optional: tuple[str, ...] = ("test",)) -> None:
    name = f"inaturalist{year}"

    def load(root: Path, options: dict[str, Any]) -> DatasetIndex:
        """The official JSON files; without them, torchvision's folders (``inat_folders``)."""
        from fgvc.datasets import inat_folders

        _check_options(name, options)
        split_files = {**files, **options.get("files", {})}
        if not any((root / f).is_file() for f in split_files.values()):
            found = inat_folders.torchvision_folders(root, year)
            if found:
                return inat_folders.load_torchvision_layout(name, root, year, found)
            inat_folders.refuse_inner_folder(name, root)
            labelled = [f for s, f in split_files.items() if s != "test"]
            raise DatasetError(f"{name}: none of {', '.join(labelled)} under {root}, nor "
                               f"torchvision's {' / '.join(inat_folders.VERSIONS[year])} folder(s) "
                               f"(expected layout: {CARDS_LAYOUTS[year]}); {card_hint(name)}")
        if not any((root / f).is_file() for s, f in split_files.items() if s != "test"):
            raise DatasetError(f"{name}: no labelled split under {root}: expected "
                               f"{' or '.join(f for s, f in split_files.items() if s != 'test')}")
        return load_coco(name, root, split_files, optional=optional, renames=TORCHVISION_RENAMES)

    def markers(options: dict[str, Any]) -> tuple[str, ...]:
        from fgvc.datasets import inat_folders

        return (*{**files, **options.get("files", {})}.values(), *inat_folders.VERSIONS[year])

    register(name, summary, classes, options={"files": dict[str, str]}, markers=markers)(load)


CARDS_LAYOUTS = {
    2017: "train2017.json, val2017.json[, test2017.json], train_val_images/...",
    2018: "train2018.json, val2018.json[, test2018.json], train_val2018/...",
    2019: "train2019.json, val2019.json[, test2019.json], train_val2019/...",
    2021: "train.json and/or train_mini.json, val.json[, public_test.json], train/, train_mini/, val/",
}
_inaturalist_adapter(2017, {"train": "train2017.json", "val": "val2017.json", "test": "test2017.json"},
                     5089, "iNaturalist 2017 (COCO JSON, or torchvision's 2017/ folder)")
_inaturalist_adapter(2018, {"train": "train2018.json", "val": "val2018.json", "test": "test2018.json"},
                     8142, "iNaturalist 2018 (COCO JSON, or torchvision's 2018/ folder)")
_inaturalist_adapter(2019, {"train": "train2019.json", "val": "val2019.json", "test": "test2019.json"},
                     1010, "iNaturalist 2019 (COCO JSON, or torchvision's 2019/ folder)")
_inaturalist_adapter(2021, {"train": "train.json", "train_mini": "train_mini.json", "val": "val.json",
                            "test": "public_test.json"}, 10000,
                     "iNaturalist 2021: train and/or train_mini, val (COCO JSON, or torchvision's "
                     "2021_* folders)", optional=("train", "train_mini", "val", "test"))


HERBARIUM_LAYOUTS = (
    ("2020/2021", {"train": "train/metadata.json", "test": "test/metadata.json"},
     {"train": ("train",), "test": ("test",)}),
    ("2022", {"train": "train_metadata.json", "test": "test_metadata.json"},
     {"train": ("train_images",), "test": ("test_images",)}),
)


def herbarium_root(root: Path) -> Path:
    """The 2020 archive unpacks into ``nybg2020/``: accept that folder or the one holding it."""
    nested = root / "nybg2020"
    return nested if nested.is_dir() and not (root / "train").is_dir() else root


@register("herbarium2020", "Herbarium 2020, 2021, 2022 and later (COCO-style metadata JSON)",
          num_classes=lambda options: None, options={"files": dict[str, str]},
          markers=("train/metadata.json", "train_metadata.json", "nybg2020/train/metadata.json"))
def load_herbarium(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """The edition is read from what is on disk: ``train/metadata.json`` (2020, 2021) or
    ``train_metadata.json`` + ``train_images/`` (2022 and later); the class count is the
    metadata's (32,093 / 64,500 / 15,501)."""
    _check_options("herbarium2020", options)
    root = herbarium_root(root)
    found = [layout for layout in HERBARIUM_LAYOUTS if (root / layout[1]["train"]).is_file()]
    if len(found) > 1:
        raise DatasetError(f"herbarium2020: {root} holds two editions' metadata ("
                           f"{' and '.join(files['train'] for _, files, _ in found)}); fix: give the "
                           "root of one edition")
    if found:
        _edition, files, folders = found[0]
        return load_coco("herbarium2020", root, {**files, **options.get("files", {})},
                         folders=folders)
    expected = "; or ".join(f"{', '.join(files.values())} ({edition})"
                            for edition, files, _ in HERBARIUM_LAYOUTS)
    raise DatasetError(f"herbarium2020: no metadata under {root} (expected {expected}); "
                       f"{card_hint('herbarium2020')}")


COCO_OPTIONS = {"files", "name", "images"}


@register("coco", "any COCO-style classification JSON; options.files maps split -> JSON path, "
          "options.images names the image folder",
          num_classes=lambda options: 0,
          options={"files": dict[str, str], "name": str, "images": str | dict[str, str]},
          markers=lambda o: tuple(map(str, o["files"].values()))
          if isinstance(o.get("files"), dict) else ())
def load_generic_coco(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """``options.files``: split -> JSON file relative to the root. ``options.images``: the
    folder the ``file_name``s are relative to (one for every split, or split -> folder);
    without it, the folder is found as for the named datasets (the root, or the JSON's
    folder: ``path_mapping``)."""
    unknown = set(options) - COCO_OPTIONS
    if unknown:
        raise DatasetError(f"dataset.options: unknown option(s) {', '.join(sorted(unknown))} for "
                           f"coco (known: {', '.join(sorted(COCO_OPTIONS))})")
    files = options.get("files")
    if not isinstance(files, dict) or not files:
        raise DatasetError("dataset.options.files: the coco adapter needs a mapping of split -> "
                           "JSON file relative to the root, e.g. {train: train.json, val: val.json}")
    files = {str(k): str(v) for k, v in files.items()}
    name = str(options.get("name", "coco"))
    return load_coco(name, root, files, optional=(),
                     image_folders=_image_folders(name, root, options.get("images"), files))


def _image_folders(name: str, root: Path, images: str | dict[str, str] | None,
                   files: dict[str, str]) -> dict[str, str]:
    """``options.images`` per split, each an existing folder under the root."""
    if images is None:
        return {}
    folders = {split: images for split in files} if isinstance(images, str) else dict(images)
    unknown = sorted(set(folders) - set(files))
    if unknown:
        raise DatasetError(f"dataset.options.images: split(s) {', '.join(unknown)} have no JSON "
                           f"in options.files (splits: {', '.join(files)})")
    for split, folder in folders.items():
        option = "dataset.options.images" + ("" if isinstance(images, str) else f".{split}")
        if PurePosixPath(folder).is_absolute() or ".." in PurePosixPath(folder).parts:
            raise DatasetError(f"{option}: {folder!r} leaves the dataset root {root}; fix: give "
                               "a folder relative to the root")
        require_dir(root / folder, "coco", f"{option}: {folder}/ under the root, holding the "
                    "images the JSON's file_name values name")
    return folders
