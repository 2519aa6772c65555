"""iNaturalist as torchvision's ``INaturalist`` keeps it: image folders only, no JSON.

torchvision's ``root`` holds one folder per version: ``2017/``, ``2018/``, ``2019/`` (the train
and val images merged, ``<supercategory>/<category>/<file>``) and ``2021_train/``,
``2021_train_mini/``, ``2021_valid/`` (``<NNNNN_Kingdom_..._genus_species>/<file>``). fgvc reads
the same root. Category ids are the dataset's own where the folders carry them: the 5-digit
prefix (2021, equal to the official JSON's ids) or the numeric folder (2018, 2019). 2017's
folders are species names: ids are then torchvision's (the position of ``<super>/<species>`` in
sorted order); with the official ``train2017.json``/``val2017.json`` in the root, ``coco.py``
reads the official ids and the train/val split instead. Without the JSON there are no image ids
either: an image is identified by its path relative to its version folder
(``<category folder>/<file>``, ``<supercategory>/<category>/<file>``), since equal file names
occur in different category folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from fgvc.datasets.base import DatasetError, DatasetIndex, RawSample, build_index
from fgvc.datasets.folders import IMAGE_SUFFIXES
from fgvc.datasets.raw import WrongRootError

VERSIONS = {2017: ("2017",), 2018: ("2018",), 2019: ("2019",),
            2021: ("2021_train", "2021_train_mini", "2021_valid")}
SPLITS = {"2021_train": "train", "2021_train_mini": "train_mini", "2021_valid": "val"}
MERGED_SPLIT = "trainval"  # 2017-2019: torchvision's folder merges train and val


def torchvision_folders(root: Path, year: int) -> list[str]:
    return [v for v in VERSIONS[year] if (root / v).is_dir()]


def refuse_inner_folder(name: str, root: Path) -> None:
    """Pointing at ``2021_train_mini/`` itself is a common slip: say which root to give."""
    if any(root.name in versions for versions in VERSIONS.values()):
        raise WrongRootError(f"{name}: {root} is one of torchvision's version folders; give its "
                           f"parent as the root: --root {root.parent}")


def _sorted_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def _images(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def _read_2021(root: Path, version: str, categories: dict[str, str]) -> list[RawSample]:
    samples = []
    for dir_name in _sorted_dirs(root / version):
        prefix, _, rest = dir_name.partition("_")
        if not (len(prefix) == 5 and prefix.isdigit()):
            raise DatasetError(f"{root / version / dir_name}: expected a category folder named "
                               "<5-digit id>_<kingdom>_..._<genus>_<species>")
        cid = str(int(prefix))
        categories.setdefault(cid, " ".join(rest.split("_")[-2:]))
        for file in _images(root / version / dir_name):
            samples.append(RawSample(f"{version}/{dir_name}/{file}", cid, f"{dir_name}/{file}"))
    return samples


def _read_pre2021(root: Path, year: int, categories: dict[str, str]) -> list[RawSample]:
    folder, samples, position = root / str(year), [], 0
    for super_name in _sorted_dirs(folder):
        for cat in _sorted_dirs(folder / super_name):
            if year == 2017:
                cid, position = str(position), position + 1
            elif cat.isdigit():
                cid = str(int(cat))
            else:
                raise DatasetError(f"{folder / super_name / cat}: iNaturalist {year} category "
                                   "folders are numeric ids")
            categories[cid] = cat if year == 2017 else f"category {cid} ({super_name})"
            for file in _images(folder / super_name / cat):
                samples.append(RawSample(f"{year}/{super_name}/{cat}/{file}", cid,
                                         f"{super_name}/{cat}/{file}"))
    return samples


def load_torchvision_layout(name: str, root: Path, year: int, found: list[str]) -> DatasetIndex:
    """Splits ``train``/``train_mini``/``val`` (2021) or ``trainval`` (2017-2019), as found."""
    categories: dict[str, str] = {}
    if year == 2021:
        splits = {SPLITS[v]: _read_2021(root, v, categories) for v in found}
    else:
        splits = {MERGED_SPLIT: _read_pre2021(root, year, categories)}
    return build_index(name, root, categories, splits,
                       source=f"torchvision folders {', '.join(found)} under {root}")
