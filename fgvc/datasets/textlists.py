"""Datasets described by plain text lists: CUB-200-2011 and NABirds (the same family of
space-separated files), Oxford-IIIT Pets and Birdsnap."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import (
    as_float,
    as_floats,
    as_int,
    path_mapping,
    read_dict_table,
    read_table,
    require_file,
)
from fgvc.datasets.integrity import check_label_range, problem
from fgvc.datasets.registry import register

log = logging.getLogger(__name__)


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise DatasetError(f"dataset.options: {name} takes no options, got {sorted(options)}")


def _find_root(root: Path, nested: str) -> Path:
    """Accept the archive's folder itself or the folder that holds it."""
    return root if (root / "images.txt").is_file() else root / nested


def keyed(path: Path, rows: list[tuple[int, str, Any]], known: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """``(line, key, value)`` rows as a mapping; a key listed twice with different values is a
    conflict, twice with the same value a repeat, and a key missing from ``known`` (the image
    ids of images.txt) an unknown reference."""
    out: dict[str, Any] = {}
    for line, key, value in rows:
        entry = f"line {line} (id {key})"
        if known is not None and key not in known:
            problem("unknown_reference", path, entry, f"id {key} is not in images.txt",
                    "remove the line or add the image to images.txt")
        if key in out:
            if out[key] != value:
                problem("conflict", path, entry, f"id {key} is listed again with {value!r} "
                        f"(before: {out[key]!r})", "keep one line per id")
            problem("repeated_entry", path, entry, f"id {key} is listed twice", "remove the repeat")
            continue
        out[key] = value
    return out


def load_birds_lists(name: str, root: Path, folder: str, leaf_classes_only: bool) -> DatasetIndex:
    """CUB-200-2011 / NABirds: images.txt, image_class_labels.txt, classes.txt,
    train_test_split.txt and bounding_boxes.txt, keyed by image id, paths under images/.

    NABirds' classes.txt also lists inner nodes of its taxonomy; only classes that label an image
    become labels (its 555 leaves), so class ids need not be contiguous.
    """
    layout = (f"{folder}/images/<class folder>/<file>.jpg, {folder}/images.txt, "
              "image_class_labels.txt, classes.txt, train_test_split.txt[, bounding_boxes.txt]")

    files = {f: root / f for f in ("images.txt", "image_class_labels.txt", "classes.txt",
                                   "train_test_split.txt", "bounding_boxes.txt")}

    def table(file: str, columns: int, max_split: int | None = None):
        # Extra fields stay in the last one, whose check then names the line.
        return read_table(require_file(files[file], name, layout), columns,
                          max_split=columns - 1 if max_split is None else max_split)

    paths = keyed(files["images.txt"], [(n, i, rel) for n, (i, rel) in table("images.txt", 2, 1)])
    path = files["image_class_labels.txt"]
    labels = keyed(path, [(n, i, str(as_int(c, path, n, "class id")))
                          for n, (i, c) in table("image_class_labels.txt", 2)], paths)
    path = files["classes.txt"]
    names = keyed(path, [(n, str(as_int(c, path, n, "class id")), cn)
                         for n, (c, cn) in table("classes.txt", 2, 1)])
    flags = []
    for n, (image_id, flag) in table("train_test_split.txt", 2):
        if flag not in ("0", "1"):
            raise DatasetError(f"{files['train_test_split.txt']}:{n}: expected 1 (train) or 0 "
                               f"(test), got {flag!r}")
        flags.append((n, image_id, flag == "1"))
    is_train = keyed(files["train_test_split.txt"], flags, paths)
    boxes = {}
    path = files["bounding_boxes.txt"]
    if path.is_file():
        boxes = keyed(path, [(n, image_id, as_floats(xywh[:4], path, n, "box coordinate"))
                             for n, (image_id, *xywh) in read_table(path, 5)], paths)
    splits: dict[str, list[RawSample]] = {"train": [], "test": []}
    for image_id, rel in paths.items():
        for what, mapping in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
            if image_id not in mapping:
                raise DatasetError(f"{name}: image {image_id} of images.txt is missing from "
                                   f"{root / what}")
        split = "train" if is_train[image_id] else "test"
        splits[split].append(RawSample(f"images/{rel}", labels[image_id], image_id))
    used = set(labels.values())
    unknown = sorted(used - set(names))
    if unknown:
        raise DatasetError(f"{name}: class id(s) {unknown[:5]} label images but are not in "
                           f"{root / 'classes.txt'}")
    categories = {c: n for c, n in names.items() if c in used or not leaf_classes_only}
    return build_index(name, root, categories, splits, boxes, source=str(root / "images.txt"))


@register("cub200", "CUB-200-2011: CUB_200_2011/images/ and its id lists", 200,
          markers=("images.txt", "CUB_200_2011/images.txt"))
def load_cub200(root: Path, options: dict[str, Any]) -> DatasetIndex:
    _no_options("cub200", options)
    return load_birds_lists("cub200", _find_root(root, "CUB_200_2011"), "CUB_200_2011",
                            leaf_classes_only=False)


@register("nabirds", "NABirds: nabirds/images/ and its id lists (555 leaf classes)", 555,
          markers=("images.txt", "nabirds/images.txt"))
def load_nabirds(root: Path, options: dict[str, Any]) -> DatasetIndex:
    _no_options("nabirds", options)
    return load_birds_lists("nabirds", _find_root(root, "nabirds"), "nabirds",
                            leaf_classes_only=True)


PETS_CLASSES = 37
PETS_LAYOUT = "images/<Breed_Name>_<n>.jpg, annotations/{trainval.txt, test.txt}"


@register("oxford_pets", "Oxford-IIIT Pets: images/ + annotations/{trainval,test}.txt", PETS_CLASSES,
          markers=("annotations/trainval.txt", "annotations/test.txt"))
def load_oxford_pets(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Splits trainval and test; class names come from the image names (breed prefix); the
    head boxes of ``annotations/xmls/`` (trainval images only) where present."""
    _no_options("oxford_pets", options)
    splits, categories = {}, {}
    for split, file in (("trainval", "trainval.txt"), ("test", "test.txt")):
        path = require_file(root / "annotations" / file, "oxford_pets", PETS_LAYOUT)
        samples = []
        for n, fields in read_table(path, 4, comment="#"):
            image, class_id = fields[0], as_int(fields[1], path, n, "class id")
            check_label_range(path, f"line {n} ({image})", class_id, 1, PETS_CLASSES, "class id")
            class_id = str(class_id)
            categories.setdefault(class_id, image.rsplit("_", 1)[0].replace("_", " "))
            samples.append(RawSample(f"images/{image}.jpg", class_id, image))
        splits[split] = samples
    boxes = _pets_head_boxes(root / "annotations" / "xmls")
    return build_index("oxford_pets", root, categories, splits, boxes,
                       source=str(root / "annotations"))


def _pets_head_boxes(folder: Path) -> dict[str, tuple[float, float, float, float]]:
    """Pascal-VOC files ``<image>.xml``: the first object's box as (x, y, width, height)."""
    import xml.etree.ElementTree as ET

    boxes = {}
    for path in sorted(folder.glob("*.xml")) if folder.is_dir() else []:
        try:
            box = ET.parse(path).getroot().find("object/bndbox")
            x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (ET.ParseError, AttributeError, TypeError, ValueError):
            raise DatasetError(f"{path}: expected a Pascal VOC annotation with "
                               "object/bndbox/{xmin,ymin,xmax,ymax}") from None
        boxes[path.stem] = (x1, y1, x2 - x1, y2 - y1)
    return boxes


BIRDSNAP_LAYOUT = ("species.txt, images.txt, test_images.txt (tab-separated, with headers) and "
                   "the downloaded images under images/<path> or, as the official download script "
                   "leaves them, download/images/<path>")
BIRDSNAP_IMAGE_FOLDERS = ("images", "download/images")


@register("birdsnap", "Birdsnap: species.txt, images.txt, test_images.txt + images/ or the script's "
          "download/images/", 500, markers=("species.txt", "test_images.txt"))
def load_birdsnap(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Images that were never downloaded (dead URLs) are counted, reported and skipped; the
    images folder is the one of ``BIRDSNAP_IMAGE_FOLDERS`` that holds the listed files."""
    _no_options("birdsnap", options)
    species_path = require_file(root / "species.txt", "birdsnap", BIRDSNAP_LAYOUT)
    images_path = require_file(root / "images.txt", "birdsnap", BIRDSNAP_LAYOUT)
    test_path = require_file(root / "test_images.txt", "birdsnap", BIRDSNAP_LAYOUT)
    categories = {str(as_int(row["id"], species_path, n, "species id")): row["common"]
                  for n, row in read_dict_table(species_path, ["id", "common"], delimiter="\t")}
    coords = ["bb_x1", "bb_y1", "bb_x2", "bb_y2"]
    rows = read_dict_table(images_path, ["path", "species_id", *coords], delimiter="\t")
    listed = {row["path"] for _, row in rows}
    test_paths = set()
    for n, row in read_dict_table(test_path, ["path"], delimiter="\t"):
        if row["path"] not in listed:
            problem("unknown_reference", test_path, f"line {n}", f"{row['path']} is not in "
                    f"{images_path.name}", "remove the line or add the image to images.txt")
        test_paths.add(row["path"])
    locate = path_mapping(images_path, root, [row["path"] for _, row in rows], BIRDSNAP_IMAGE_FOLDERS)
    splits: dict[str, list[RawSample]] = {"train": [], "test": []}
    boxes, missing = {}, {"train": 0, "test": 0}
    for n, row in rows:
        rel = row["path"]
        split = "test" if rel in test_paths else "train"
        if not (root / locate(rel)).is_file():
            missing[split] += 1
            continue
        x1, y1, x2, y2 = (as_float(row[c], images_path, n, c) for c in coords)
        boxes[rel] = (x1, y1, x2 - x1, y2 - y1)
        species = str(as_int(row["species_id"], images_path, n, "species_id"))
        splits[split].append(RawSample(locate(rel), species, rel))
    if rows and not any(splits.values()):
        raise DatasetError(f"birdsnap: none of the {len(rows)} images listed in {images_path} is "
                           f"under {' or '.join(str(root / f) for f in BIRDSNAP_IMAGE_FOLDERS)}; "
                           "fix: run the download script, or give the root that holds its output")
    if sum(missing.values()):
        log.warning("birdsnap: %d listed image(s) not downloaded and skipped (train %d, test %d); "
                    "`fgvc datasets info birdsnap` lists the counts", sum(missing.values()),
                    missing["train"], missing["test"])
    index = build_index("birdsnap", root, categories, splits, boxes, source=str(images_path))
    index.missing = missing
    return index
