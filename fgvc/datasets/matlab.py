"""Datasets whose metadata ships as MATLAB files: Stanford Cars and Oxford Flowers 102."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import mat_field, mat_records, read_mat, require_file
from fgvc.datasets.registry import register

CARS_DEVKIT_LAYOUT = ("cars_train/*.jpg, cars_test/*.jpg, devkit/{cars_meta.mat, "
                      "cars_train_annos.mat, cars_test_annos.mat}, cars_test_annos_withlabels.mat "
                      "(at the root or in devkit/); or cars_annos.mat + car_ims/")


def _images_folder(root: Path, name: str) -> str:
    """The Kaggle mirror nests ``cars_train/cars_train``: accept both."""
    nested = root / name / name
    return f"{name}/{name}" if nested.is_dir() else name


def _car_box(record: Any, path: Path, index: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(mat_field(record, f, path, index))
                      for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
    return (x1, y1, x2 - x1, y2 - y1)


def _read_car_annotations(path: Path, folder: str, labelled: bool, boxes: dict
                          ) -> list[RawSample]:
    records = mat_records(read_mat(path, ["annotations"])["annotations"])
    samples = []
    for i, record in enumerate(records):
        fname = str(mat_field(record, "fname", path, i))
        category = str(int(mat_field(record, "class", path, i))) if labelled else None
        boxes[fname] = _car_box(record, path, i)
        samples.append(RawSample(f"{folder}/{fname}", category, fname))
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
        category = str(int(mat_field(record, "class", path, i)))
        is_test = bool(int(mat_field(record, "test", path, i)))
        image_id = Path(rel).name
        boxes[image_id] = _car_box(record, path, i)
        splits["test" if is_test else "train"].append(RawSample(rel, category, image_id))
    return build_index("stanford_cars", root, categories, splits, boxes, source=str(path))


@register("stanford_cars", "Stanford Cars: devkit .mat files (or the single cars_annos.mat)", 196)
def load_stanford_cars(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Test labels come from ``cars_test_annos_withlabels.mat`` (root or ``devkit/``); without it
    the test split is unlabelled."""
    if options:
        raise DatasetError(f"dataset.options: stanford_cars takes no options, got {sorted(options)}")
    if (root / "cars_annos.mat").is_file() and not (root / "devkit").is_dir():
        return _load_cars_single_file(root)
    devkit = root / "devkit"
    meta = require_file(devkit / "cars_meta.mat", "stanford_cars", CARS_DEVKIT_LAYOUT)
    train_annos = require_file(devkit / "cars_train_annos.mat", "stanford_cars", CARS_DEVKIT_LAYOUT)
    categories = _car_names(meta)
    boxes: dict = {}
    splits = {"train": _read_car_annotations(train_annos, _images_folder(root, "cars_train"),
                                             True, boxes)}
    labelled_test = next((p for p in (root / "cars_test_annos_withlabels.mat",
                                      devkit / "cars_test_annos_withlabels.mat") if p.is_file()), None)
    test_folder = _images_folder(root, "cars_test")
    if labelled_test is not None:
        splits["test"] = _read_car_annotations(labelled_test, test_folder, True, boxes)
    elif (devkit / "cars_test_annos.mat").is_file():
        splits["test"] = _read_car_annotations(devkit / "cars_test_annos.mat", test_folder, False,
                                               boxes)
    return build_index("stanford_cars", root, categories, splits, boxes)


FLOWERS_LAYOUT = "jpg/image_00001.jpg ..., imagelabels.mat (labels), setid.mat (trnid, valid, tstid)"


@register("flowers102", "Oxford Flowers 102: jpg/ + imagelabels.mat + setid.mat", 102)
def load_flowers102(root: Path, options: dict[str, Any]) -> DatasetIndex:
    """Splits train (1,020), val (1,020), test (6,149) and trainval, as papers train on it.
    The official files carry no class names: classes are named by their id."""
    if options:
        raise DatasetError(f"dataset.options: flowers102 takes no options, got {sorted(options)}")
    labels_path = require_file(root / "imagelabels.mat", "flowers102", FLOWERS_LAYOUT)
    setid_path = require_file(root / "setid.mat", "flowers102", FLOWERS_LAYOUT)
    labels = [int(v) for v in mat_records(read_mat(labels_path, ["labels"])["labels"])]
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
    return build_index("flowers102", root, categories, splits)
