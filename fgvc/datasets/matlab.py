"""Datasets whose metadata ships as MATLAB files: Stanford Cars and Oxford Flowers 102."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import mat_field, mat_records, read_mat, require_file
from fgvc.datasets.integrity import check_label_range
from fgvc.datasets.registry import register

log = logging.getLogger(__name__)

CARS_DEVKIT_LAYOUT = ("cars_train/*.jpg, cars_test/*.jpg (or Kaggle's cars_train/cars_train/, "
                      "cars_test/cars_test/), {cars_meta.mat, cars_train_annos.mat, "
                      "cars_test_annos.mat} in devkit/ or car_devkit/devkit/, test labels from "
                      "cars_test_annos_withlabels.mat or cars_annos.mat; or cars_annos.mat + car_ims/")
CARS_DEVKITS = ("devkit", "car_devkit/devkit")
CARS_LABEL_FILES = ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat",
                    "car_devkit/devkit/cars_test_annos_withlabels.mat",
                    "cars_test/cars_test_annos_withlabels.mat")


def _images_folder(root: Path, name: str) -> str:
    """The Kaggle mirror nests ``cars_train/cars_train``: accept both."""
    nested = root / name / name
    return f"{name}/{name}" if nested.is_dir() else name


def _car_box(record: Any, path: Path, index: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(mat_field(record, f, path, index))
                      for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
    return (x1, y1, x2 - x1, y2 - y1)


def _car_class(record: Any, path: Path, index: int, num_classes: int) -> str:
    value = int(mat_field(record, "class", path, index))
    check_label_range(path, f"entry {index + 1}", value, 1, num_classes, "class")
    return str(value)


def _read_car_annotations(path: Path, split: str, folder: str, num_classes: int | None,
                          boxes: dict) -> list[RawSample]:
    """Image ids are ``<split>/<fname>``: the devkit numbers train and test from 00001.jpg."""
    records = mat_records(read_mat(path, ["annotations"])["annotations"])
    samples = []
    for i, record in enumerate(records):
        fname = str(mat_field(record, "fname", path, i))
        category = _car_class(record, path, i, num_classes) if num_classes else None
        image_id = f"{split}/{fname}"
        boxes[image_id] = _car_box(record, path, i)
        samples.append(RawSample(f"{folder}/{fname}", category, image_id))
    return samples


def _car_names(path: Path) -> dict[str, str]:
    names = mat_records(read_mat(path, ["class_names"])["class_names"])
    return {str(i + 1): str(n) for i, n in enumerate(names)}


def _load_cars_single_file(root: Path) -> DatasetIndex:
    path = root / "cars_annos.mat"
    data = read_mat(path, ["annotations", "class_names"])
    categories = {str(i + 1): str(n) for i, n in enumerate(mat_records(data["class_names"]))}
    splits: dict[str, list[RawSample]] = {"train": [], "test": []}
    boxes: dict = {}
    for i, record in enumerate(mat_records(data["annotations"])):
        rel = str(mat_field(record, "relative_im_path", path, i))
        category = _car_class(record, path, i, len(categories))
        is_test = bool(int(mat_field(record, "test", path, i)))
        image_id = Path(rel).name
        boxes[image_id] = _car_box(record, path, i)
        splits["test" if is_test else "train"].append(RawSample(rel, category, image_id))
    return build_index("stanford_cars", root, categories, splits, boxes, source=str(path))


def _labels_from_cars_annos(path: Path, test: list[RawSample], boxes: dict,
                            num_classes: int) -> list[RawSample] | None:
    """``cars_annos.mat`` lists the test images (``test == 1``) in the devkit's order; its labels
    are used only when every box matches the devkit's, entry by entry."""
    records = [(i, r) for i, r in enumerate(mat_records(read_mat(path, ["annotations"])["annotations"]))
               if int(mat_field(r, "test", path, i))]
    if len(records) != len(test):
        log.warning("stanford_cars: %s lists %d test images, the devkit %d: test left unlabelled",
                    path, len(records), len(test))
        return None
    labelled = []
    for sample, (i, record) in zip(test, records, strict=True):
        if _car_box(record, path, i) != boxes[sample.image_id]:
            log.warning("stanford_cars: %s entry %d does not match %s (boxes differ): test left "
                        "unlabelled", path, i + 1, sample.image_id)
            return None
        labelled.append(RawSample(sample.path, _car_class(record, path, i, num_classes),
                                  sample.image_id))
    return labelled


@register("stanford_cars", "Stanford Cars: devkit .mat files (also Kaggle's mirror) or cars_annos.mat "
          "+ car_ims/", 196)
def load_stanford_cars(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """The devkit (``devkit/`` or the mirror's ``car_devkit/devkit/``) with images in
    ``cars_train[/cars_train]``; test labels from the first labels file found
    (``CARS_LABEL_FILES``, else a box-checked ``cars_annos.mat``), else the test split is
    unlabelled. Without a devkit: ``cars_annos.mat`` with its ``car_ims/``."""
    if options:
        raise DatasetError(f"dataset.options: stanford_cars takes no options, got {sorted(options)}")
    devkit = next((root / d for d in CARS_DEVKITS if (root / d / "cars_train_annos.mat").is_file()),
                  None)
    annos = root / "cars_annos.mat"
    if devkit is None and annos.is_file():
        if (root / "car_ims").is_dir():
            return _load_cars_single_file(root)
        raise DatasetError(f"stanford_cars: {annos} lists images under car_ims/, which is missing "
                           f"under {root}, and no devkit was found ({' or '.join(CARS_DEVKITS)}); "
                           f"fix: add car_ims/ or the devkit (expected layout: {CARS_DEVKIT_LAYOUT})")
    devkit = devkit or root / "devkit"
    meta = require_file(devkit / "cars_meta.mat", "stanford_cars", CARS_DEVKIT_LAYOUT)
    train_annos = require_file(devkit / "cars_train_annos.mat", "stanford_cars", CARS_DEVKIT_LAYOUT)
    categories = _car_names(meta)
    boxes: dict = {}
    splits = {"train": _read_car_annotations(train_annos, "train", _images_folder(root, "cars_train"),
                                             len(categories), boxes)}
    test_folder = _images_folder(root, "cars_test")
    labels_file = next((root / f for f in CARS_LABEL_FILES if (root / f).is_file()), None)
    if labels_file is not None:
        splits["test"] = _read_car_annotations(labels_file, "test", test_folder, len(categories),
                                               boxes)
    elif (devkit / "cars_test_annos.mat").is_file():
        test = _read_car_annotations(devkit / "cars_test_annos.mat", "test", test_folder, None, boxes)
        labelled = _labels_from_cars_annos(annos, test, boxes, len(categories)) \
            if annos.is_file() else None
        splits["test"] = labelled or test
    return build_index("stanford_cars", root, categories, splits, boxes, source=str(devkit))


FLOWERS_CLASSES = 102
FLOWERS_LAYOUT = "jpg/image_00001.jpg ..., imagelabels.mat (labels), setid.mat (trnid, valid, tstid)"


@register("flowers102", "Oxford Flowers 102: jpg/ + imagelabels.mat + setid.mat", FLOWERS_CLASSES)
def load_flowers102(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Splits train (1,020), val (1,020), test (6,149) and trainval, as papers train on it.
    The official files carry no class names: classes are named by their id."""
    if options:
        raise DatasetError(f"dataset.options: flowers102 takes no options, got {sorted(options)}")
    labels_path = require_file(root / "imagelabels.mat", "flowers102", FLOWERS_LAYOUT)
    setid_path = require_file(root / "setid.mat", "flowers102", FLOWERS_LAYOUT)
    labels = [int(v) for v in mat_records(read_mat(labels_path, ["labels"])["labels"])]
    for number, label in enumerate(labels, start=1):
        check_label_range(labels_path, f"image {number}", label, 1, FLOWERS_CLASSES, "label")
    ids = read_mat(setid_path, ["trnid", "valid", "tstid"])
    splits = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        samples = []
        for number in (int(v) for v in mat_records(ids[key])):
            if not 1 <= number <= len(labels):
                raise DatasetError(f"{setid_path}: {key} lists image {number}, but "
                                   f"{labels_path} labels only images 1..{len(labels)}")
            stem = f"image_{number:05d}"
            samples.append(RawSample(f"jpg/{stem}.jpg", str(labels[number - 1]), stem))
        splits[split] = samples
    categories = {str(c): f"flower {c}" for c in sorted(set(labels))}
    return build_index("flowers102", root, categories, splits, source=str(setid_path))
