"""COCO-style JSON datasets: iNaturalist 2017-2019 and later years, Herbarium 2020 and later.

One reader, parameterised by the annotation files of each split. ``file_name`` in the JSON is
relative to the dataset root (iNaturalist) or to the JSON's own folder (Herbarium 2020+); both
are resolved to a path relative to the root. A split's JSON without ``annotations`` (a
competition's test set) yields unlabelled samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.files import read_json, require_file
from fgvc.datasets.registry import register


def _field(obj: dict, key: str, path: Path, what: str, position: int) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DatasetError(f"{path}: {what} #{position} lacks {key!r}")
    return obj[key]


def read_coco_split(json_path: Path, root: Path, categories: dict[str, str],
                    boxes: dict[str, tuple[float, float, float, float]]) -> list[RawSample]:
    """Samples of one COCO-style file; adds its categories and boxes to the given mappings."""
    data = read_json(json_path)
    if not isinstance(data, dict) or "images" not in data:
        raise DatasetError(f"{json_path}: expected a JSON object with an 'images' list")
    for i, cat in enumerate(data.get("categories") or []):
        cid = str(_field(cat, "id", json_path, "category", i))
        categories.setdefault(cid, str(cat.get("name", cid)))
    prefix = _path_prefix(json_path, root, data["images"])
    labels: dict[str, str] = {}
    for i, ann in enumerate(data.get("annotations") or []):
        image_id = str(_field(ann, "image_id", json_path, "annotation", i))
        labels[image_id] = str(_field(ann, "category_id", json_path, "annotation", i))
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4:
            boxes[image_id] = tuple(float(v) for v in bbox)
    labelled = "annotations" in data and bool(data["annotations"])
    samples = []
    for i, image in enumerate(data["images"]):
        image_id = str(_field(image, "id", json_path, "image", i))
        file_name = str(_field(image, "file_name", json_path, "image", i))
        if labelled and image_id not in labels:
            raise DatasetError(f"{json_path}: image {image_id} ({file_name}) has no annotation")
        samples.append(RawSample(prefix + file_name, labels.get(image_id), image_id))
    return samples


def _path_prefix(json_path: Path, root: Path, images: list) -> str:
    """'' when file names are relative to the root, else the JSON folder relative to the root."""
    if not images or not isinstance(images[0], dict) or "file_name" not in images[0]:
        return ""
    first = str(images[0]["file_name"])
    if (root / first).exists() or json_path.parent == root:
        return ""
    folder = json_path.parent.relative_to(root).as_posix()
    return f"{folder}/" if (json_path.parent / first).exists() else ""


def load_coco(name: str, root: Path, split_files: dict[str, str],
              optional: tuple[str, ...] = ("test",)) -> DatasetIndex:
    """Read every split's JSON; a split listed in ``optional`` may be absent."""
    categories: dict[str, str] = {}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    splits: dict[str, list[RawSample]] = {}
    layout = ", ".join(f"{s}: {f}" for s, f in split_files.items())
    for split, file_name in split_files.items():
        path = root / file_name
        if split in optional and not path.exists():
            continue
        require_file(path, name, layout)
        splits[split] = read_coco_split(path, root, categories, boxes)
    if not categories:
        raise DatasetError(f"{name}: no 'categories' in {layout} under {root}")
    return build_index(name, root, categories, splits, boxes)


def _coco_adapter(name: str, files: dict[str, str], classes: int, summary: str) -> None:
    def load(root: Path, options: dict[str, Any]) -> DatasetIndex:
        unknown = set(options) - {"files"}
        if unknown:
            raise DatasetError(f"dataset.options: unknown option(s) {sorted(unknown)} for {name}")
        return load_coco(name, root, {**files, **options.get("files", {})})

    register(name, summary, classes, options={"files": dict[str, str]})(load)


_coco_adapter("inaturalist2017", {"train": "train2017.json", "val": "val2017.json",
                                  "test": "test2017.json"}, 5089, "iNaturalist 2017 (COCO JSON)")
_coco_adapter("inaturalist2018", {"train": "train2018.json", "val": "val2018.json",
                                  "test": "test2018.json"}, 8142, "iNaturalist 2018 (COCO JSON)")
_coco_adapter("inaturalist2019", {"train": "train2019.json", "val": "val2019.json",
                                  "test": "test2019.json"}, 1010, "iNaturalist 2019 (COCO JSON)")
_coco_adapter("inaturalist2021", {"train": "train.json", "val": "val.json",
                                  "test": "public_test.json"}, 10000,
              "iNaturalist 2021 (COCO JSON)")
_coco_adapter("herbarium2020", {"train": "train/metadata.json", "test": "test/metadata.json"},
              32093, "Herbarium 2020 and later (COCO JSON metadata.json per split)")


@register("coco", "any COCO-style classification JSON; options.files maps split -> JSON path",
          num_classes=lambda options: 0, options={"files": dict[str, str], "name": str})
def load_generic_coco(root: Path, options: dict[str, Any]) -> DatasetIndex:
    files = options.get("files")
    if not isinstance(files, dict) or not files:
        raise DatasetError("dataset.options.files: the coco adapter needs a mapping of split -> "
                           "JSON file relative to the root, e.g. {train: train.json, val: val.json}")
    return load_coco(str(options.get("name", "coco")), root, {str(k): str(v) for k, v in files.items()},
                     optional=())
