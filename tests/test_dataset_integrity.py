"""Metadata integrity: every inconsistency is one error naming the file, the entry and the fix;
``dataset.integrity: warn`` downgrades only the documented subset; BOM and CRLF are accepted."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fgvc.cli import main
from fgvc.datasets import DatasetError, load_dataset
from fgvc.datasets.layouts import (
    write_birdsnap,
    write_cub200,
    write_flowers102,
    write_inaturalist,
    write_oxford_pets,
    write_stanford_cars,
)


def sizes(index) -> dict[str, int]:
    return {k: len(v) for k, v in index.splits.items()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pristine")
    trees = {"flowers102": write_flowers102, "cub200": write_cub200, "oxford_pets": write_oxford_pets,
             "birdsnap": write_birdsnap, "stanford_cars": write_stanford_cars,
             "inaturalist2019": lambda root: write_inaturalist(root, 2019)}
    for name, write in trees.items():
        write(base / name)
    return {name: base / name for name in trees}


@pytest.fixture
def tree(pristine, tmp_path):
    def copy(name: str) -> Path:
        shutil.copytree(pristine[name], tmp_path / name)
        return tmp_path / name
    return copy


def inat_json(tree, file: str) -> tuple[Path, dict]:
    """A fresh iNaturalist 2019 tree and one of its JSON files, to break."""
    root = tree("inaturalist2019")
    return root, json.loads((root / file).read_text())


def save(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc))


def edit_mat(path: Path, change) -> dict:
    """Apply ``change`` to a MATLAB file's variables in place; returns them."""
    from scipy.io import loadmat, savemat

    data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    change(data)
    savemat(path, data)
    return data


def error_then_warning(name: str, root: Path, caplog, message: str):
    """A downgradable problem: an error by default, a warning (and the index) under ``warn``."""
    with pytest.raises(DatasetError, match=message):
        load_dataset(name, root)
    with caplog.at_level(logging.WARNING):
        index = load_dataset(name, root, integrity="warn")
    assert re.search(message.split(" \\(or set")[0], caplog.text)
    return index


def same_image_in(first: str, second: str):
    def change(ids: dict) -> None:
        ids[second][0, 0] = ids[first][0, 0]
    return change


# ---- labels out of the declared range ----


@pytest.mark.parametrize("bad", [0, 99999])
def test_flowers_label_out_of_range(tree, bad):
    def relabel(data: dict) -> None:
        data["labels"] = data["labels"].astype(np.int64)
        data["labels"][0, 4] = bad

    root = tree("flowers102")
    edit_mat(root / "imagelabels.mat", relabel)
    with pytest.raises(DatasetError, match=rf"imagelabels\.mat: image 5: label {bad} is outside the "
                                           r"declared range 1\.\.102; fix: correct the label"):
        load_dataset("flowers102", root)
    with pytest.raises(DatasetError):  # not downgradable
        load_dataset("flowers102", root, integrity="warn")


def test_pets_class_id_out_of_range(tree):
    root = tree("oxford_pets")
    path = root / "annotations" / "test.txt"
    lines = path.read_text().splitlines()
    fields = lines[1].split()
    lines[1] = " ".join([fields[0], "38", *fields[2:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"test\.txt: line 2 \(.*\): class id 38 is outside the "
                                           r"declared range 1\.\.37"):
        load_dataset("oxford_pets", root)


def test_cars_class_out_of_range(tree):
    root = tree("stanford_cars")
    edit_mat(root / "devkit" / "cars_train_annos.mat",  # 4 classes in cars_meta.mat
             lambda data: data["annotations"][0, 2].__setitem__("class", np.uint8(9)))
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat: entry 3: class 9 is outside the "
                                           r"declared range 1\.\.4"):
        load_dataset("stanford_cars", root)


# ---- an image in two splits (downgradable) ----


def test_flowers_image_in_two_splits(tree, caplog):
    root = tree("flowers102")
    ids = edit_mat(root / "setid.mat", same_image_in("trnid", "tstid"))
    first = f"jpg/image_{int(ids['trnid'][0, 0]):05d}.jpg"
    index = error_then_warning("flowers102", root, caplog,
                               rf"setid\.mat: image {first}: listed in both train and test; fix: "
                               r".*remove it from the other \(or set dataset\.integrity: warn")
    assert first in {s.path for s in index.split("train")} & {s.path for s in index.split("test")}


# ---- repeated entries, duplicate ids, conflicting annotations, unknown references ----


def test_cars_repeated_rows(tree, caplog):
    def double_first_two(data: dict) -> None:
        data["annotations"] = np.concatenate([data["annotations"], data["annotations"][:, :2]], axis=1)

    root = tree("stanford_cars")
    edit_mat(root / "devkit" / "cars_train_annos.mat", double_first_two)
    index = error_then_warning("stanford_cars", root, caplog,
                               r"devkit: train image 'train/00001\.jpg': cars_train/00001\.jpg is "
                               r"listed twice in train; fix: remove the repeated entry")
    assert sizes(index) == {"train": 12, "test": 12}  # the repeats are dropped


def test_repeated_entry_with_another_label_is_a_conflict(tree):
    root = tree("oxford_pets")
    path = root / "annotations" / "trainval.txt"
    lines = path.read_text().splitlines()
    name, _, *rest = lines[0].split()
    lines.append(" ".join([name, "2", *rest]))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"images/Abyssinian_0\.jpg is listed twice in trainval "
                                           r"with categories '1' and '2'"):
        load_dataset("oxford_pets", root, integrity="warn")


def _conflicting(doc: dict) -> None:
    first = doc["annotations"][0]
    doc["annotations"].append(dict(first, id=999, category_id=(first["category_id"] + 1) % 4))


def _renumber(doc: dict) -> None:
    doc["images"][1]["id"] = doc["images"][0]["id"]


def _unknown_category(doc: dict) -> None:
    doc["annotations"][2]["category_id"] = 77


COCO_BREAKAGES = {
    "duplicate test ids": ("test2019.json", _renumber,
                           r"test image '3000': the id names two images in test \(test2019/.*\.jpg "
                           r"and test2019/.*\.jpg\); fix: give every image its own id"),
    "conflicting annotations": ("train2019.json", _conflicting,
                                r"train2019\.json: annotation #12 \(image 1000\): image 1000 is "
                                r"annotated with both category 0 and 1; fix: keep one annotation per "
                                r"image"),
    "annotation of an unknown image": (
        "train2019.json",
        lambda doc: doc["annotations"].append({"id": 999, "image_id": 424242, "category_id": 1}),
        r"annotation #12 \(image 424242\): image 424242 is not in 'images'; fix: remove the "
        r"annotation or add the image"),
    "unknown category": ("train2019.json", _unknown_category,
                         r"train2019\.json.*: train image '1002': category '77' is not among the "
                         r"dataset's 4 categories; fix:"),
}


@pytest.mark.parametrize("breakage", list(COCO_BREAKAGES))
def test_coco_breakages_are_errors_even_under_warn(tree, breakage):
    file, mutate, message = COCO_BREAKAGES[breakage]
    root, doc = inat_json(tree, file)
    mutate(doc)
    save(root / file, doc)
    with pytest.raises(DatasetError, match=message):
        load_dataset("inaturalist2019", root, integrity="warn")


def test_coco_same_annotation_twice_is_accepted(tree):
    root, doc = inat_json(tree, "train2019.json")
    doc["annotations"].append(dict(doc["annotations"][0], id=999))
    save(root / "train2019.json", doc)
    assert sizes(load_dataset("inaturalist2019", root))["train"] == 12


def test_cub_unknown_and_conflicting_references(tree):
    root = tree("cub200") / "CUB_200_2011"
    path = root / "image_class_labels.txt"
    original = path.read_text()
    path.write_text(original + "9999 1\n")
    with pytest.raises(DatasetError, match=r"image_class_labels\.txt: line 25 \(id 9999\): id 9999 is "
                                           r"not in images\.txt; fix:"):
        load_dataset("cub200", root.parent)
    path.write_text(original + "3 4\n")
    with pytest.raises(DatasetError, match=r"image_class_labels\.txt: line 25 \(id 3\): id 3 is listed "
                                           r"again with '4' \(before: '3'\); fix: keep one line per id"):
        load_dataset("cub200", root.parent)


def test_birdsnap_test_list_names_unknown_image(tree):
    root = tree("birdsnap")
    with (root / "test_images.txt").open("a") as f:
        f.write("Bird_9/nowhere.jpg\n")
    with pytest.raises(DatasetError, match=r"test_images\.txt: line 6: Bird_9/nowhere\.jpg is not in "
                                           r"images\.txt"):
        load_dataset("birdsnap", root)


# ---- paths that leave the root ----


@pytest.mark.parametrize("file_name", ["../../etc/passwd", "/etc/passwd", "train_val2019/../../x.jpg",
                                       "C:\\Windows\\x.jpg", "\\\\server\\share\\x.jpg"])
@pytest.mark.parametrize("position", [0, 1])
def test_paths_leaving_the_root(tree, file_name, position):
    """First in the file or after another (the whole-column search looks for a slash at the
    start of the joined paths and after each separator)."""
    root, doc = inat_json(tree, "val2019.json")
    doc["images"][position]["file_name"] = file_name
    image_id = doc["images"][position]["id"]
    save(root / "val2019.json", doc)
    with pytest.raises(DatasetError, match=rf"val image '{image_id}': path .* leaves the dataset "
                                           r"root; fix: paths in the metadata must be relative"):
        load_dataset("inaturalist2019", root, integrity="warn")


# ---- BOM and CRLF ----


def _bom_crlf(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))


def test_bom_and_crlf_accepted(tree, pristine):
    cub = tree("cub200")
    for path in (cub / "CUB_200_2011").glob("*.txt"):
        _bom_crlf(path)
    birdsnap = tree("birdsnap")
    for path in birdsnap.glob("*.txt"):
        _bom_crlf(path)
    inat = tree("inaturalist2019")
    _bom_crlf(inat / "train2019.json")
    pets = tree("oxford_pets")
    for path in (pets / "annotations").glob("*.txt"):
        _bom_crlf(path)
    for name, root in (("cub200", cub), ("birdsnap", birdsnap), ("inaturalist2019", inat),
                       ("oxford_pets", pets)):
        index, reference = load_dataset(name, root), load_dataset(name, pristine[name])
        assert index.splits == reference.splits and index.classes == reference.classes
        assert index.boxes == reference.boxes


# ---- the option, in recipes and on the command line ----


def test_integrity_recipe_field_and_cli(tree, capsys):
    from fgvc.recipes.recipe import DatasetConfig, load_recipe
    from fgvc.recipes.schema import SchemaError

    assert DatasetConfig(name="cub200").integrity == "strict"
    with pytest.raises(SchemaError, match="integrity"):
        load_recipe("recipes/quickstart.yaml", ["dataset.integrity=lenient"])
    root = tree("flowers102")
    edit_mat(root / "setid.mat", same_image_in("trnid", "valid"))
    assert main(["datasets", "info", "flowers102", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "listed in both train and val" in err and len(err.splitlines()) == 1
    assert main(["datasets", "info", "flowers102", "--root", str(root), "--integrity", "warn"]) == 0


def test_pipeline_passes_the_integrity_policy(tree):
    from fgvc.recipes.recipe import load_recipe
    from fgvc.recipes.splits import load_recipe_dataset

    root = tree("flowers102")
    edit_mat(root / "setid.mat", same_image_in("trnid", "valid"))
    base = ["dataset.name=flowers102", f"dataset.root={root}", "dataset.options={}"]
    with pytest.raises(DatasetError, match="listed in both"):
        load_recipe_dataset(load_recipe("recipes/quickstart.yaml", base))
    index = load_recipe_dataset(load_recipe("recipes/quickstart.yaml", [*base, "dataset.integrity=warn"]))
    assert len(index.split("train")) == 8
