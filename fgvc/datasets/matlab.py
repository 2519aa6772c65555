"""Datasets whose metadata ships as MATLAB files: Stanford Cars and Oxford Flowers 102."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import (
    as_integer,
    as_number,
    as_text,
    card_hint,
    mat_field,
    mat_records,
    read_mat,
    require_file,
)
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


BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def _car_box(record: Any, path: Path, index: int) -> tuple[float, float, float, float] | None:
    """(x, y, width, height), or ``None`` for an annotation file that carries no box fields
    (copies that keep only ``class`` and ``fname``); a record with some of them needs all."""
    if not any(hasattr(record, f) for f in BOX_FIELDS):
        return None
    x1, y1, x2, y2 = (as_number(mat_field(record, f, path, index), path, f"entry {index + 1}", f)
                      for f in BOX_FIELDS)
    return (x1, y1, x2 - x1, y2 - y1)


def _car_class(record: Any, path: Path, index: int, num_classes: int) -> str:
    value = as_integer(mat_field(record, "class", path, index), path, f"entry {index + 1}",
                       "class")
    check_label_range(path, f"entry {index + 1}", value, 1, num_classes, "class")
    return str(value)


def _car_text(record: Any, field: str, path: Path, index: int) -> str:
    """A file name field: one string (a MATLAB char array), not an array of them."""
    return as_text(mat_field(record, field, path, index), path, f"entry {index + 1}", field)


def _is_test(record: Any, path: Path, index: int) -> bool:
    flag = as_integer(mat_field(record, "test", path, index), path, f"entry {index + 1}", "test")
    if flag not in (0, 1):
        raise DatasetError(f"{path}: entry {index + 1}: test must be 0 (train) or 1 (test), "
                           f"got {flag}")
    return bool(flag)


def _read_car_annotations(path: Path, split: str, folder: str, num_classes: int | None,
                          boxes: dict) -> list[RawSample]:
    """Image ids are ``<split>/<fname>``: the devkit numbers train and test from 00001.jpg."""
    records = mat_records(read_mat(path, ["annotations"])["annotations"])
    samples = []
    for i, record in enumerate(records):
        fname = _car_text(record, "fname", path, i)
        category = _car_class(record, path, i, num_classes) if num_classes else None
        image_id = f"{split}/{fname}"
        _keep_box(boxes, image_id, _car_box(record, path, i))
        samples.append(RawSample(f"{folder}/{fname}", category, image_id))
    return samples


def _keep_box(boxes: dict, image_id: str, box: tuple[float, float, float, float] | None) -> None:
    if box is not None:
        boxes[image_id] = box


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
        rel = _car_text(record, "relative_im_path", path, i)
        category = _car_class(record, path, i, len(categories))
        image_id = Path(rel).name
        _keep_box(boxes, image_id, _car_box(record, path, i))
        splits["test" if _is_test(record, path, i) else "train"].append(
            RawSample(rel, category, image_id))
    listed = {split: samples for split, samples in splits.items() if samples}  # a test-only list
    return build_index("stanford_cars", root, categories, listed, boxes, source=str(path))


def _labels_from_cars_annos(path: Path, test: list[RawSample], boxes: dict,
                            num_classes: int) -> list[RawSample] | None:
    """``cars_annos.mat`` lists the test images (``test == 1``) in the devkit's order; its labels
    are used only when every box matches the devkit's, entry by entry."""
    records = [(i, r) for i, r in enumerate(mat_records(read_mat(path, ["annotations"])["annotations"]))
               if _is_test(r, path, i)]
    if len(records) != len(test):
        log.warning("stanford_cars: %s lists %d test images, the devkit %d: test left unlabelled",
                    path, len(records), len(test))
        return None
    labelled = []
    for sample, (i, record) in zip(test, records, strict=True):
        box, devkit_box = _car_box(record, path, i), boxes.get(sample.image_id)
        if box is None or devkit_box is None:
            log.warning("stanford_cars: %s or the devkit's test annotations carry no boxes, so "
                        "their order cannot be checked: test left unlabelled", path)
            return None
        if box != devkit_box:
            log.warning("stanford_cars: %s entry %d does not match %s (boxes differ): test left "
                        "unlabelled", path, i + 1, sample.image_id)
            return None
        labelled.append(RawSample(sample.path, _car_class(record, path, i, num_classes),
                                  sample.image_id))
    return labelled


CARS_MARKERS = ("devkit/cars_meta.mat", "car_devkit/devkit/cars_meta.mat", "cars_annos.mat")


@register("stanford_cars", "Stanford Cars: devkit .mat files (also Kaggle's mirror) or cars_annos.mat "
          "+ car_ims/", 196, markers=CARS_MARKERS)
def load_stanford_cars(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """The devkit (``devkit/`` or the mirror's ``car_devkit/devkit/``) with images in
    ``cars_train[/cars_train]``; test labels from the first labels file found
    (``CARS_LABEL_FILES``, else a box-checked ``cars_annos.mat``), else the test split is
    unlabelled. Without a devkit: ``cars_annos.mat`` with its ``car_ims/``. A split is read
    where both its annotations and its images folder are there (a test-only copy reads as
    its test split); boxes are read where the annotations carry them."""
    if options:
        raise DatasetError(f"dataset.options: stanford_cars takes no options, got {sorted(options)}")
    devkit = next((root / d for d in CARS_DEVKITS if (root / d / "cars_meta.mat").is_file()), None)
    annos = root / "cars_annos.mat"
    if devkit is None and annos.is_file():
        if (root / "car_ims").is_dir():
            return _load_cars_single_file(root)
        raise DatasetError(f"stanford_cars: {annos} lists images under car_ims/, which is missing "
                           f"under {root}, and no devkit was found ({' or '.join(CARS_DEVKITS)}); "
                           f"fix: add car_ims/ or the devkit (expected layout: {CARS_DEVKIT_LAYOUT})")
    devkit = devkit or root / "devkit"
    categories = _car_names(require_file(devkit / "cars_meta.mat", "stanford_cars",
                                         CARS_DEVKIT_LAYOUT))
    boxes: dict = {}
    splits = {}
    train_annos, train_folder = devkit / "cars_train_annos.mat", _images_folder(root, "cars_train")
    if _split_present(root, train_annos, train_folder):
        splits["train"] = _read_car_annotations(train_annos, "train", train_folder,
                                                len(categories), boxes)
    test_folder = _images_folder(root, "cars_test")
    labels_file = next((root / f for f in CARS_LABEL_FILES if (root / f).is_file()), None)
    if labels_file is not None and _split_present(root, labels_file, test_folder):
        splits["test"] = _read_car_annotations(labels_file, "test", test_folder, len(categories),
                                               boxes)
    elif _split_present(root, devkit / "cars_test_annos.mat", test_folder):
        test = _read_car_annotations(devkit / "cars_test_annos.mat", "test", test_folder, None, boxes)
        labelled = _labels_from_cars_annos(annos, test, boxes, len(categories)) \
            if annos.is_file() else None
        splits["test"] = labelled or test
    if not splits:
        raise DatasetError(f"stanford_cars: neither split is complete under {root}: each needs "
                           f"its annotations and its images folder (expected layout: "
                           f"{CARS_DEVKIT_LAYOUT}); {card_hint('stanford_cars')}")
    return build_index("stanford_cars", root, categories, splits, boxes, source=str(devkit))


def _split_present(root: Path, annotations: Path, folder: str) -> bool:
    """Whether a split can be read: its annotations and its images folder; annotations whose
    folder is absent (a copy of the test half only) leave the split out, with a warning."""
    if not annotations.is_file():
        return False
    if not (root / folder).is_dir():
        log.warning("stanford_cars: %s is there but %s is not: that split is left out",
                    annotations, root / folder)
        return False
    return True


FLOWERS_CLASSES = 102
FLOWERS_LAYOUT = "jpg/image_00001.jpg ..., imagelabels.mat (labels), setid.mat (trnid, valid, tstid)"


@register("flowers102", "Oxford Flowers 102: jpg/ + imagelabels.mat + setid.mat", FLOWERS_CLASSES,
          markers=("imagelabels.mat", "setid.mat"))
def load_flowers102(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Splits train (1,020), val (1,020), test (6,149) and trainval, as papers train on it.
    The official files carry no class names: classes are named by their id."""
    if options:
        raise DatasetError(f"dataset.options: flowers102 takes no options, got {sorted(options)}")
    labels_path = require_file(root / "imagelabels.mat", "flowers102", FLOWERS_LAYOUT)
    setid_path = require_file(root / "setid.mat", "flowers102", FLOWERS_LAYOUT)
    labels = [as_integer(v, labels_path, f"image {number}", "label") for number, v
              in enumerate(mat_records(read_mat(labels_path, ["labels"])["labels"]), start=1)]
    for number, label in enumerate(labels, start=1):
        check_label_range(labels_path, f"image {number}", label, 1, FLOWERS_CLASSES, "label")
    ids = read_mat(setid_path, ["trnid", "valid", "tstid"])
    splits = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        samples = []
        for number in (as_integer(v, setid_path, f"{key} entry {position}", "image number")
                       for position, v in enumerate(mat_records(ids[key]), start=1)):
            if not 1 <= number <= len(labels):
                raise DatasetError(f"{setid_path}: {key} lists image {number}, but "
                                   f"{labels_path} labels only images 1..{len(labels)}")
            stem = f"image_{number:05d}"
            samples.append(RawSample(f"jpg/{stem}.jpg", str(labels[number - 1]), stem))
        splits[split] = samples
    categories = {str(c): f"flower {c}" for c in sorted(set(labels))}
    return build_index("flowers102", root, categories, splits, source=str(setid_path))
