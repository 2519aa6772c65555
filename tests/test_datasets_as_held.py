"""Item 13: datasets as torchvision and mirrors hold them. An empty split is an error; iNaturalist
folders identify images by their path; Stanford Cars without boxes or with the test half only;
the generic `coco` adapter's `images` folder; Birdsnap's never-downloaded images as a counted
warning; a root one level off names the folder to pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.io import loadmat, savemat

from fgvc.cli import main
from fgvc.datasets import load_dataset
from fgvc.datasets.layouts import (
    write_birdsnap,
    write_cub200,
    write_flowers102,
    write_inaturalist2021,
    write_inaturalist_torchvision,
    write_oxford_pets,
    write_stanford_cars,
)


def only_error(capsys, status: int, *argv: str) -> str:
    """The one `error:` line of a command that exits ``status``."""
    assert main(list(argv)) == status
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def image(path: Path, colour=(90, 160, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), colour).save(path)


# ---- a split with zero samples ----


def imagefolder_with_empty_val(root: Path) -> None:
    for c in ("a", "b"):
        for i in range(2):
            image(root / "train" / c / f"{i}.jpg")
    (root / "val").mkdir()


def test_empty_split_info_and_verify_exit_1(tmp_path, capsys):
    imagefolder_with_empty_val(tmp_path)
    line = only_error(capsys, 1, "datasets", "info", "imagefolder", "--root", str(tmp_path))
    assert line == (f"error: imagefolder at {tmp_path}: split 'val' has no images: its folder or "
                    "list names no image; fix: complete the copy, or give the root that holds "
                    "it (`fgvc datasets card imagefolder` shows the layout)")
    assert main(["datasets", "verify", "imagefolder", "--root", str(tmp_path)]) == 1
    assert f"empty split: imagefolder at {tmp_path}: split 'val' has no images" in \
        capsys.readouterr().out
    assert main(["datasets", "info", "imagefolder", "--root", str(tmp_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["empty_splits"] == [line.removeprefix("error: ")]
    line = only_error(capsys, 1, "datasets", "export", "imagefolder", "--root", str(tmp_path),
                      "--split", "val")
    assert "split 'val' has no images" in line


def test_empty_split_run_exits_2_with_one_line(tmp_path, capsys):
    imagefolder_with_empty_val(tmp_path / "data")
    recipe = {"name": "empty", "device": "cpu", "output_root": str(tmp_path / "runs"),
              "dataset": {"name": "imagefolder", "root": str(tmp_path / "data"),
                          "num_workers": 0},
              "model": {"arch": "test_resnet"},
              "stages": [{"name": "train", "resolution": 32, "epochs": 1, "batch_size": 2}],
              "evaluate": {"split": "train"}, "predict": None, "submission": None}
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump(recipe))
    line = only_error(capsys, 2, "run", str(path))
    assert line == (f"error: dataset.val_split: split 'val' of 'imagefolder' at {tmp_path / 'data'} "
                    "has no images; fix: complete the copy (`fgvc datasets info imagefolder "
                    f"--root {tmp_path / 'data'}` shows what is there), or name a split that has "
                    "images (train, trainval)")
    assert not (tmp_path / "runs").exists()


def test_split_with_every_image_never_downloaded_is_empty(tmp_path, capsys):
    write_birdsnap(tmp_path)
    tests = (tmp_path / "test_images.txt").read_text().split()[1:]
    for rel in tests:
        (tmp_path / "images" / rel).unlink(missing_ok=True)
    line = only_error(capsys, 1, "datasets", "info", "birdsnap", "--root", str(tmp_path))
    assert f"split 'test' has no images: all {len(tests)} image(s) listed for it are absent " \
           "(never downloaded)" in line


# ---- iNaturalist folders: images by their path under the split ----


def test_inat_folders_identify_images_by_path_2021(tmp_path):
    write_inaturalist2021(tmp_path, torchvision=True)
    folders = sorted(p for p in (tmp_path / "2021_train").iterdir())
    first = sorted(folders[0].iterdir())[0]
    shutil.copy(first, folders[1] / first.name)  # the same file name in another class folder
    index = load_dataset("inaturalist2021", tmp_path)
    ids = [s.image_id for s in index.split("train")]
    assert f"{folders[0].name}/{first.name}" in ids and f"{folders[1].name}/{first.name}" in ids
    assert all(s.path == f"2021_train/{s.image_id}" for s in index.split("train"))


def test_inat_folders_identify_images_by_path_2018(tmp_path):
    write_inaturalist_torchvision(tmp_path, 2018)
    classes = sorted(p for p in (tmp_path / "2018").glob("*/*") if p.is_dir())
    first = sorted(classes[0].iterdir())[0]
    shutil.copy(first, classes[1] / first.name)
    index = load_dataset("inaturalist2018", tmp_path)
    ids = {s.image_id for s in index.split("trainval")}
    for folder in classes[:2]:
        assert f"{folder.parent.name}/{folder.name}/{first.name}" in ids


# ---- Stanford Cars as copies hold it ----


def strip_boxes(path: Path) -> None:
    """Rewrite an annotations .mat without its bbox_* fields."""
    variables = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    records = variables["annotations"]
    kept = [f for f in records.dtype.names if not f.startswith("bbox_")]
    out = np.zeros(records.shape, dtype=[(f, "O") for f in kept])
    for f in kept:
        for i in range(records.shape[1]):
            out[0, i][f] = records[0, i][f]
    savemat(path, {**variables, "annotations": out})


def test_cars_annotations_without_boxes_load(tmp_path):
    write_stanford_cars(tmp_path)
    with_boxes = load_dataset("stanford_cars", tmp_path)
    for path in [*(tmp_path / "devkit").glob("*annos*.mat"),
                 tmp_path / "cars_test_annos_withlabels.mat"]:
        strip_boxes(path)
    index = load_dataset("stanford_cars", tmp_path)
    assert index.boxes == {} and len(with_boxes.boxes) == 24
    for split in ("train", "test"):
        assert list(index.split(split)) == list(with_boxes.split(split))


def test_cars_single_file_without_boxes_loads(tmp_path):
    write_stanford_cars(tmp_path, single_file=True)
    strip_boxes(tmp_path / "cars_annos.mat")
    index = load_dataset("stanford_cars", tmp_path)
    assert index.boxes == {} and len(index.split("train")) == len(index.split("test")) == 12


@pytest.mark.parametrize("keep_annotations", [False, True])
def test_cars_test_only_tree_loads_its_test_split(tmp_path, capsys, keep_annotations):
    write_stanford_cars(tmp_path)
    full = load_dataset("stanford_cars", tmp_path)
    shutil.rmtree(tmp_path / "cars_train")
    if not keep_annotations:
        (tmp_path / "devkit" / "cars_train_annos.mat").unlink()
    index = load_dataset("stanford_cars", tmp_path)
    assert list(index.splits) == ["test"] and index.is_labelled("test")
    assert list(index.split("test")) == list(full.split("test"))
    assert main(["datasets", "info", "stanford_cars", "--root", str(tmp_path)]) == 0


def test_cars_single_file_listing_only_test_images(tmp_path):
    write_stanford_cars(tmp_path, single_file=True)
    records = loadmat(tmp_path / "cars_annos.mat")
    annotations = records["annotations"]
    test = annotations[:, [bool(annotations[0, i]["test"].item()) for i in range(annotations.shape[1])]]
    savemat(tmp_path / "cars_annos.mat", {"annotations": test, "class_names": records["class_names"]})
    index = load_dataset("stanford_cars", tmp_path)
    assert list(index.splits) == ["test"] and len(index.split("test")) == 12


# ---- the generic coco adapter's images folder ----


def coco_with_image_folder(root: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        image(root / "pictures" / name)
    doc = {"categories": [{"id": 3, "name": "three"}, {"id": 5, "name": "five"}],
           "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
           "annotations": [{"image_id": 1, "category_id": 3}, {"image_id": 2, "category_id": 5}]}
    (root / "annotations").mkdir()
    (root / "annotations" / "train.json").write_text(json.dumps(doc))


def test_coco_images_option_names_the_image_folder(tmp_path, capsys):
    coco_with_image_folder(tmp_path)
    options = {"files": {"train": "annotations/train.json"}, "images": "pictures"}
    index = load_dataset("coco", tmp_path, options)
    assert [(s.path, s.label) for s in index.split("train")] == [("pictures/a.jpg", 0),
                                                                 ("pictures/b.jpg", 1)]
    per_split = load_dataset("coco", tmp_path, {**options, "images": {"train": "pictures"}})
    assert list(per_split.split("train")) == list(index.split("train"))
    argv = ["datasets", "verify", "coco", "--root", str(tmp_path), "--option",
            "files.train=annotations/train.json"]
    assert main([*argv, "--option", "images=pictures"]) == 0
    assert "2 image(s) checked, 0 missing" in capsys.readouterr().out
    assert main(argv) == 1  # without it, the names are looked for beside the JSON or the root


@pytest.mark.parametrize("images,expected", [
    ("photos", "coco: missing folder {root}/photos (expected layout: dataset.options.images: "
               "photos/ under the root, holding the images the JSON's file_name values name)"),
    ("../pictures", "dataset.options.images: '../pictures' leaves the dataset root {root}; fix: "
                    "give a folder relative to the root"),
])
def test_coco_images_option_refusals(tmp_path, capsys, images, expected):
    coco_with_image_folder(tmp_path)
    line = only_error(capsys, 2, "datasets", "info", "coco", "--root", str(tmp_path), "--option",
                      "files.train=annotations/train.json", "--option", f"images={images}")
    assert line.startswith("error: " + expected.format(root=tmp_path))


def test_coco_unknown_option_refused(tmp_path, capsys):
    coco_with_image_folder(tmp_path)
    line = only_error(capsys, 2, "datasets", "info", "coco", "--root", str(tmp_path), "--option",
                      "files.train=annotations/train.json", "--option", "image_dir=pictures")
    assert line == ("error: dataset.options: unknown option(s) image_dir for coco (known: files, "
                    "images, name)")


# ---- Birdsnap: images never downloaded ----


def test_birdsnap_never_downloaded_is_a_counted_warning(tmp_path, capsys):
    write_birdsnap(tmp_path, missing=2)
    assert main(["datasets", "verify", "birdsnap", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "14 image(s) checked, 0 missing, 0 unreadable, 0 over the pixel limit" in out
    assert ("warning: 2 image(s) listed in the metadata but never downloaded, skipped: 2 in train"
            in out.splitlines())
    assert main(["datasets", "verify", "birdsnap", "--root", str(tmp_path), "--strict"]) == 1
    assert ("error (--strict): 2 image(s) listed in the metadata but never downloaded, skipped: "
            "2 in train") in capsys.readouterr().out.splitlines()


# ---- a root one level off ----


@pytest.mark.parametrize("name,write,inner,marker", [
    ("cub200", write_cub200, "CUB_200_2011/images", "images.txt"),
    ("oxford_pets", write_oxford_pets, "images", "annotations/trainval.txt"),
    ("flowers102", write_flowers102, "jpg", "imagelabels.mat"),
    ("stanford_cars", write_stanford_cars, "cars_train", "devkit/cars_meta.mat"),
])
def test_root_one_level_too_low(tmp_path, capsys, name, write, inner, marker):
    write(tmp_path / "data")
    too_low = tmp_path / "data" / inner
    line = only_error(capsys, 2, "datasets", "info", name, "--root", str(too_low))
    assert line == (f"error: {name}: {too_low} is one level below the dataset's root; pass "
                    f"--root {too_low.parent} (dataset.root in a recipe), the folder that holds "
                    f"{marker}")


@pytest.mark.parametrize("name,write,marker", [
    ("cub200", write_cub200, "CUB_200_2011/images.txt"),
    ("oxford_pets", write_oxford_pets, "annotations/trainval.txt"),
    ("flowers102", write_flowers102, "imagelabels.mat"),
    ("stanford_cars", write_stanford_cars, "devkit/cars_meta.mat"),
    ("birdsnap", write_birdsnap, "species.txt"),
])
def test_root_one_level_too_high(tmp_path, capsys, name, write, marker):
    write(tmp_path / name)
    (tmp_path / "other").mkdir()
    line = only_error(capsys, 2, "datasets", "info", name, "--root", str(tmp_path))
    assert line == (f"error: {name}: {tmp_path} is one level above the dataset's root; pass "
                    f"--root {tmp_path / name} (dataset.root in a recipe), the folder that holds "
                    f"{marker}")
    assert main(["datasets", "info", name, "--root", str(tmp_path / name)]) == 0


def test_a_root_that_is_not_off_by_one_keeps_its_message(tmp_path, capsys):
    line = only_error(capsys, 2, "datasets", "info", "flowers102", "--root", str(tmp_path))
    assert line.startswith(f"error: flowers102: missing {tmp_path / 'imagelabels.mat'} "
                           "(expected layout:")
