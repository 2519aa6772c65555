"""Datasets described by plain text lists: CUB-200-2011 and NABirds (the same family of
space-separated files), Oxford-IIIT Pets and Birdsnap."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import (
    as_float,
    as_int,
    read_dict_table,
    read_table,
    require_file,
)
from fgvc.datasets.registry import register

log = logging.getLogger(__name__)


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise DatasetError(f"dataset.options: {name} takes no options, got {sorted(options)}")


def _find_root(root: Path, nested: str) -> Path:
    """Accept the archive's folder itself or the folder that holds it."""
    return root if (root / "images.txt").is_file() else root / nested


def load_birds_lists(name: str, root: Path, folder: str, leaf_classes_only: bool) -> DatasetIndex:
    """CUB-200-2011 / NABirds: images.txt, image_class_labels.txt, classes.txt,
    train_test_split.txt and bounding_boxes.txt, keyed by image id, paths under images/.

    NABirds' classes.txt also lists inner nodes of its taxonomy; only classes that label an image
    become labels (its 555 leaves), so class ids need not be contiguous.
    """
    layout = (f"{folder}/images/<class folder>/<file>.jpg, {folder}/images.txt, "
              "image_class_labels.txt, classes.txt, train_test_split.txt[, bounding_boxes.txt]")

    def table(file: str, columns: int, max_split: int | None = None):
        # Extra fields stay in the last one, whose check then names the line.
        return read_table(require_file(root / file, name, layout), columns,
                          max_split=columns - 1 if max_split is None else max_split)

    paths = {image_id: rel for _, (image_id, rel) in table("images.txt", 2, 1)}
    labels = {image_id: str(as_int(c, root / "image_class_labels.txt", n, "class id"))
              for n, (image_id, c) in table("image_class_labels.txt", 2)}
    names = {str(as_int(c, root / "classes.txt", n, "class id")): class_name
             for n, (c, class_name) in table("classes.txt", 2, 1)}
    is_train = {}
    for n, (image_id, flag) in table("train_test_split.txt", 2):
        if flag not in ("0", "1"):
            raise DatasetError(f"{root / 'train_test_split.txt'}:{n}: expected 1 (train) or 0 "
                               f"(test), got {flag!r}")
        is_train[image_id] = flag == "1"
    boxes = {}
    if (root / "bounding_boxes.txt").is_file():
        box_file = root / "bounding_boxes.txt"
        for n, (image_id, *xywh) in read_table(box_file, 5):
            boxes[image_id] = tuple(as_float(v, box_file, n, "box coordinate") for v in xywh[:4])
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
    return build_index(name, root, categories, splits, boxes)


@register("cub200", "CUB-200-2011: CUB_200_2011/images/ and its id lists", 200)
def load_cub200(root: Path, options: dict[str, Any]) -> DatasetIndex:
    _no_options("cub200", options)
    return load_birds_lists("cub200", _find_root(root, "CUB_200_2011"), "CUB_200_2011",
                            leaf_classes_only=False)


@register("nabirds", "NABirds: nabirds/images/ and its id lists (555 leaf classes)", 555)
def load_nabirds(root: Path, options: dict[str, Any]) -> DatasetIndex:
    _no_options("nabirds", options)
    return load_birds_lists("nabirds", _find_root(root, "nabirds"), "nabirds",
                            leaf_classes_only=True)


PETS_LAYOUT = "images/<Breed_Name>_<n>.jpg, annotations/{trainval.txt, test.txt}"


@register("oxford_pets", "Oxford-IIIT Pets: images/ + annotations/{trainval,test}.txt", 37)
def load_oxford_pets(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Splits trainval and test; class names come from the image names (breed prefix); the
    head boxes of ``annotations/xmls/`` (trainval images only) where present."""
    _no_options("oxford_pets", options)
    splits, categories = {}, {}
    for split, file in (("trainval", "trainval.txt"), ("test", "test.txt")):
        path = require_file(root / "annotations" / file, "oxford_pets", PETS_LAYOUT)
        samples = []
        for n, fields in read_table(path, 4, comment="#"):
            image, class_id = fields[0], str(as_int(fields[1], path, n, "class id"))
            categories.setdefault(class_id, image.rsplit("_", 1)[0].replace("_", " "))
            samples.append(RawSample(f"images/{image}.jpg", class_id, image))
        splits[split] = samples
    boxes = _pets_head_boxes(root / "annotations" / "xmls")
    return build_index("oxford_pets", root, categories, splits, boxes)


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
                   "the downloaded images under images/<path>")


@register("birdsnap", "Birdsnap: species.txt, images.txt, test_images.txt + downloaded images/", 500)
def load_birdsnap(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Images that were never downloaded (dead URLs) are counted, reported and skipped."""
    _no_options("birdsnap", options)
    species_path = require_file(root / "species.txt", "birdsnap", BIRDSNAP_LAYOUT)
    images_path = require_file(root / "images.txt", "birdsnap", BIRDSNAP_LAYOUT)
    test_path = require_file(root / "test_images.txt", "birdsnap", BIRDSNAP_LAYOUT)
    categories = {str(as_int(row["id"], species_path, n, "species id")): row["common"]
                  for n, row in read_dict_table(species_path, ["id", "common"], delimiter="\t")}
    test_paths = {row["path"] for _, row in read_dict_table(test_path, ["path"], delimiter="\t")}
    splits: dict[str, list[RawSample]] = {"train": [], "test": []}
    boxes, missing = {}, {"train": 0, "test": 0}
    coords = ["bb_x1", "bb_y1", "bb_x2", "bb_y2"]
    for n, row in read_dict_table(images_path, ["path", "species_id", *coords], delimiter="\t"):
        rel = row["path"]
        split = "test" if rel in test_paths else "train"
        if not (root / "images" / rel).is_file():
            missing[split] += 1
            continue
        x1, y1, x2, y2 = (as_float(row[c], images_path, n, c) for c in coords)
        boxes[rel] = (x1, y1, x2 - x1, y2 - y1)
        species = str(as_int(row["species_id"], images_path, n, "species_id"))
        splits[split].append(RawSample(f"images/{rel}", species, rel))
    if sum(missing.values()):
        log.warning("birdsnap: %d listed image(s) not downloaded and skipped (train %d, test %d); "
                    "`fgvc datasets info birdsnap` lists the counts", sum(missing.values()),
                    missing["train"], missing["test"])
    index = build_index("birdsnap", root, categories, splits, boxes)
    index.missing = missing
    return index
