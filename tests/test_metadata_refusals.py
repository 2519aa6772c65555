"""Item 12: metadata that would be read wrongly is refused with the file and entry named:
non-integer labels or split ids (1.5 in a Flowers .mat), non-numeric category ids in COCO
files, non-scalar image ids; and symbolic links that lead out of the dataset root, unless
`dataset.follow_symlinks_outside` (`--follow-symlinks-outside`) allows them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from fgvc.cli import main
from fgvc.datasets import DatasetError, load_dataset
from fgvc.datasets.layouts import write_cub200, write_flowers102, write_stanford_cars


def cli_error(capsys, *argv: str) -> str:
    """The one error line of a command that must exit 2."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


# ---- non-integer labels and split ids ----


def test_flowers_label_that_is_not_an_integer(tmp_path, capsys):
    write_flowers102(tmp_path)
    labels = loadmat(tmp_path / "imagelabels.mat")["labels"].astype(np.float64)
    labels[0, 2] = 1.5
    savemat(tmp_path / "imagelabels.mat", {"labels": labels})
    line = cli_error(capsys, "datasets", "info", "flowers102", "--root", str(tmp_path))
    assert line == (f"error: {tmp_path / 'imagelabels.mat'}: image 3: label must be an integer, "
                    "got 1.5")


def test_flowers_split_id_that_is_not_an_integer(tmp_path, capsys):
    write_flowers102(tmp_path)
    ids = {k: v.astype(np.float64) for k, v in loadmat(tmp_path / "setid.mat").items()
           if not k.startswith("__")}
    ids["valid"][0, 1] = 4.5
    savemat(tmp_path / "setid.mat", ids)
    line = cli_error(capsys, "datasets", "info", "flowers102", "--root", str(tmp_path))
    assert line == (f"error: {tmp_path / 'setid.mat'}: valid entry 2: image number must be an "
                    "integer, got 4.5")


def test_flowers_whole_doubles_are_integers(tmp_path):
    """MATLAB writes numbers as doubles: 3.0 is the label 3, as before."""
    write_flowers102(tmp_path)
    before = load_dataset("flowers102", tmp_path)
    for name in ("imagelabels.mat", "setid.mat"):
        data = {k: v.astype(np.float64) for k, v in loadmat(tmp_path / name).items()
                if not k.startswith("__")}
        savemat(tmp_path / name, data)
    after = load_dataset("flowers102", tmp_path)
    assert all(list(after.split(s)) == list(before.split(s)) for s in before.splits)


def test_cars_class_that_is_not_an_integer(tmp_path, capsys):
    write_stanford_cars(tmp_path)
    path = tmp_path / "devkit" / "cars_train_annos.mat"
    annotations = loadmat(path)["annotations"]
    annotations[0, 1]["class"] = np.array([[2.5]])
    savemat(path, {"annotations": annotations})
    line = cli_error(capsys, "datasets", "info", "stanford_cars", "--root", str(tmp_path))
    assert line == f"error: {path}: entry 2: class must be an integer, got 2.5"


# ---- COCO category ids and image ids ----


def coco_tree(root: Path, categories: list, images: list, annotations: list) -> None:
    for image in images:
        if isinstance(image.get("file_name"), str):
            (root / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(root / image["file_name"])
    (root / "train.json").write_text(json.dumps({"categories": categories, "images": images,
                                                 "annotations": annotations}))


def coco_info(capsys, root: Path) -> str:
    return cli_error(capsys, "datasets", "info", "coco", "--root", str(root),
                     "--option", "files.train=train.json")


@pytest.mark.parametrize("category", ["bird", 1.5, None, [1], True])
def test_coco_category_id_that_is_not_numeric(tmp_path, capsys, category):
    coco_tree(tmp_path, [{"id": 1, "name": "a"}, {"id": category, "name": "b"}],
              [{"id": 1, "file_name": "a.jpg"}], [{"image_id": 1, "category_id": 1}])
    line = coco_info(capsys, tmp_path)
    assert line == (f"error: {tmp_path / 'train.json'}: category #1: category id must be an "
                    f"integer, got {category!r}")


def test_coco_annotation_with_a_non_numeric_category(tmp_path, capsys):
    """Declared category ids are integers, so a category 'bird' is named as unknown."""
    coco_tree(tmp_path, [{"id": 1, "name": "a"}],
              [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
              [{"image_id": 1, "category_id": 1}, {"image_id": 2, "category_id": "bird"}])
    line = coco_info(capsys, tmp_path)
    assert line.startswith(f"error: {tmp_path} (train.json): train image '2': category 'bird' "
                           "is not among the dataset's 1 categories")


@pytest.mark.parametrize("image_id", [[1, 2], {"n": 1}, None, True, 2.5])
def test_coco_image_id_that_is_not_a_scalar(tmp_path, capsys, image_id):
    coco_tree(tmp_path, [{"id": 1, "name": "a"}],
              [{"id": 1, "file_name": "a.jpg"}, {"id": image_id, "file_name": "b.jpg"}],
              [{"image_id": 1, "category_id": 1}, {"image_id": 2, "category_id": 1}])
    line = coco_info(capsys, tmp_path)
    assert line == (f"error: {tmp_path / 'train.json'}: image #1: image id must be an integer "
                    f"or text, got {image_id!r}")


def test_coco_annotation_image_id_that_is_not_a_scalar(tmp_path, capsys):
    coco_tree(tmp_path, [{"id": 1, "name": "a"}], [{"id": 1, "file_name": "a.jpg"}],
              [{"image_id": [1], "category_id": 1}])
    line = coco_info(capsys, tmp_path)
    assert line == (f"error: {tmp_path / 'train.json'}: annotation #0: image_id must be an "
                    "integer or text, got [1]")


def test_coco_file_name_that_is_not_text(tmp_path, capsys):
    coco_tree(tmp_path, [{"id": 1, "name": "a"}],
              [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": ["b.jpg"]}],
              [{"image_id": 1, "category_id": 1}, {"image_id": 2, "category_id": 1}])
    line = coco_info(capsys, tmp_path)
    assert line == (f"error: {tmp_path / 'train.json'}: image #1: file_name must be text, got "
                    "['b.jpg']")


def test_coco_numeric_ids_still_load(tmp_path):
    """Integers and decimal text, as COCO copies write them, keep loading."""
    coco_tree(tmp_path, [{"id": 1, "name": "a"}, {"id": "2", "name": "b"}],
              [{"id": 1, "file_name": "a.jpg"}, {"id": "b", "file_name": "b.jpg"}],
              [{"image_id": 1, "category_id": 1}, {"image_id": "b", "category_id": "2"}])
    index = load_dataset("coco", tmp_path, {"files": {"train": "train.json"}})
    assert [(s.image_id, s.label) for s in index.split("train")] == [("1", 0), ("b", 1)]


# ---- Parquet: the same rules for its columns ----


def parquet_file(root: Path, ids: list, labels: list, class_names: bool) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    images = [{"bytes": buf.getvalue(), "path": f"{i}.jpg"} for i in range(len(ids))]
    table = pa.table({"image": images, "image_id": ids, "label": labels})
    if class_names:
        features = {"label": {"names": ["a", "b", "c"], "_type": "ClassLabel"}}
        table = table.replace_schema_metadata(
            {"huggingface": json.dumps({"info": {"features": features}})})
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet")


def test_parquet_label_that_is_not_an_integer(tmp_path, capsys):
    parquet_file(tmp_path, ["x", "y"], [0.0, 1.5], class_names=True)
    line = cli_error(capsys, "datasets", "info", "parquet", "--root", str(tmp_path))
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    assert line == f"error: {path}: row 1: label (ClassLabel index) must be an integer, got 1.5"


def test_parquet_image_id_that_is_not_a_scalar(tmp_path, capsys):
    parquet_file(tmp_path, [[1], [2]], [0, 1], class_names=False)
    line = cli_error(capsys, "datasets", "info", "parquet", "--root", str(tmp_path))
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    assert line == (f"error: {path}: row 0: image_id (the image id) must be an integer or "
                    "text, got [1]")


# ---- symbolic links that lead out of the root ----


def linked_out(tmp_path: Path) -> tuple[Path, str, Path]:
    """A CUB tree whose last test image is a link to a file outside the root; returns the
    root, the image's path under CUB_200_2011/ and the outside file."""
    root = tmp_path / "cub"
    write_cub200(root)
    base = root / "CUB_200_2011"
    lines = (base / "images.txt").read_text().splitlines()
    flags = dict(line.split() for line in (base / "train_test_split.txt").read_text().splitlines())
    image_id, rel = [line.split(" ", 1) for line in lines if flags[line.split()[0]] == "0"][-1]
    outside = tmp_path / "elsewhere" / "photo.jpg"
    outside.parent.mkdir()
    (base / "images" / rel).rename(outside)
    os.symlink(outside, base / "images" / rel)
    return root, f"images/{rel}", outside


def test_link_out_of_the_root_is_refused_like_dotdot(tmp_path, capsys):
    root, rel, outside = linked_out(tmp_path)
    line = cli_error(capsys, "datasets", "info", "cub200", "--root", str(root))
    base = (root / "CUB_200_2011").resolve()
    assert line.startswith(f"error: cub200 at {root / 'CUB_200_2011'}: test image ")
    assert line.endswith(f": {rel} leads through a symbolic link to {outside.resolve()}, outside "
                         f"the dataset root {base}; fix: copy the images into the root, or set "
                         "dataset.follow_symlinks_outside: true (`fgvc datasets ... "
                         "--follow-symlinks-outside`) to read them there")
    assert main(["datasets", "info", "cub200", "--root", str(root),
                 "--follow-symlinks-outside"]) == 0
    assert main(["datasets", "verify", "cub200", "--root", str(root),
                 "--follow-symlinks-outside"]) == 0


def test_linked_folder_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "cub"
    write_cub200(root)
    images = root / "CUB_200_2011" / "images"
    folder = sorted(images.iterdir())[1]
    target = tmp_path / "store" / folder.name
    target.parent.mkdir()
    folder.rename(target)
    os.symlink(target, folder)
    with pytest.raises(DatasetError, match=rf"images/{folder.name}/\S+ leads through a symbolic "
                                           rf"link to {target.resolve()}/"):
        load_dataset("cub200", root)
    assert len(load_dataset("cub200", root, follow_symlinks_outside=True).split("train")) == 12


def test_links_inside_the_root_are_fine(tmp_path):
    root = tmp_path / "cub"
    write_cub200(root)
    images = root / "CUB_200_2011" / "images"
    folder = sorted(images.iterdir())[0]
    (root / "CUB_200_2011" / "moved").mkdir()
    folder.rename(root / "CUB_200_2011" / "moved" / folder.name)
    os.symlink(Path("..") / "moved" / folder.name, folder)  # relative, inside the root
    assert len(load_dataset("cub200", root).split("test")) == 12


def test_every_image_is_checked_when_read(tmp_path, monkeypatch, capsys):
    """At load a spread sample is checked (LINKS_PROBED per split); a link the sample misses
    is refused when the loader reads it, and named by `verify`."""
    from fgvc.datasets import integrity
    from fgvc.datasets.decode import DecodeOptions
    from fgvc.datasets.images import ImageDataset

    monkeypatch.setattr(integrity, "LINKS_PROBED", 1)
    root, rel, outside = linked_out(tmp_path)
    index = load_dataset("cub200", root)  # the one image probed per split is not the link
    test = index.split("test")
    position = next(i for i, s in enumerate(test) if s.path == rel)
    assert position > 0
    dataset = ImageDataset(index.root, test, lambda image: image.size, on_bad_image="skip")
    with pytest.raises(DatasetError, match=rf"image '{test[position].image_id}': {rel} leads "
                                           r"through a symbolic link"):
        dataset[position]
    allowed = ImageDataset(index.root, test, lambda image: image.size, on_bad_image="skip",
                           decode=DecodeOptions(follow_symlinks_outside=True))
    assert allowed[position][0] == Image.open(outside).size
    assert main(["datasets", "verify", "cub200", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "24 image(s) checked, 0 missing, 0 unreadable, 0 over the pixel limit, 1 outside " \
           "the root" in out
    assert f"outside the root: {rel} is a link to {outside.resolve()}; fix: copy" in out


def test_recipe_field_follow_symlinks_outside(tmp_path):
    from fgvc.recipes.recipe import parse_recipe
    from fgvc.recipes.splits import load_recipe_dataset

    root, _, _ = linked_out(tmp_path)
    data = {"name": "links", "dataset": {"name": "cub200", "root": str(root)},
            "model": {"arch": "test_resnet"},
            "stages": [{"name": "train", "resolution": 32, "epochs": 1}]}
    with pytest.raises(DatasetError, match="symbolic link"):
        load_recipe_dataset(parse_recipe(data))
    data["dataset"]["follow_symlinks_outside"] = True
    recipe = parse_recipe(data)
    assert recipe.dataset.follow_symlinks_outside is True
    assert len(load_recipe_dataset(recipe).split("test")) == 12
    from fgvc.datasets.decode import decode_options

    assert decode_options(recipe.dataset).follow_symlinks_outside is True
