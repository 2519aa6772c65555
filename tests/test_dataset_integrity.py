"""Metadata integrity: every inconsistency is one error naming the file, the entry and the fix;
``dataset.integrity: warn`` downgrades only the documented subset; BOM and CRLF are accepted."""

from __future__ import annotations

import json
import logging
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


# ---- labels out of the declared range ----


@pytest.mark.parametrize("bad", [0, 99999])
def test_flowers_label_out_of_range(tree, bad):
    from scipy.io import loadmat, savemat

    root = tree("flowers102")
    labels = loadmat(root / "imagelabels.mat")["labels"].astype(np.int64)
    labels[0, 4] = bad
    savemat(root / "imagelabels.mat", {"labels": labels})
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
    from scipy.io import loadmat, savemat

    root = tree("stanford_cars")
    data = loadmat(root / "devkit" / "cars_train_annos.mat")
    data["annotations"][0, 2]["class"] = np.uint8(9)  # 4 classes in cars_meta.mat
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": data["annotations"]})
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat: entry 3: class 9 is outside the "
                                           r"declared range 1\.\.4"):
        load_dataset("stanford_cars", root)


# ---- an image in two splits (downgradable) ----


def test_flowers_image_in_two_splits(tree, caplog):
    from scipy.io import loadmat, savemat

    root = tree("flowers102")
    ids = loadmat(root / "setid.mat")
    ids["tstid"][0, 0] = ids["trnid"][0, 0]
    savemat(root / "setid.mat", {k: ids[k] for k in ("trnid", "valid", "tstid")})
    first = f"jpg/image_{int(ids['trnid'][0, 0]):05d}.jpg"
    with pytest.raises(DatasetError, match=rf"setid\.mat: image {first}: listed in both train and "
                                           r"test; fix: .*remove it from the other \(or set "
                                           r"dataset\.integrity: warn"):
        load_dataset("flowers102", root)
    with caplog.at_level(logging.WARNING):
        index = load_dataset("flowers102", root, integrity="warn")
    assert "listed in both train and test" in caplog.text
    assert first in {s.path for s in index.split("train")} & {s.path for s in index.split("test")}


# ---- repeated entries and duplicate ids within a split ----


def test_cars_repeated_rows(tree, caplog):
    from scipy.io import loadmat, savemat

    root = tree("stanford_cars")
    data = loadmat(root / "devkit" / "cars_train_annos.mat")
    doubled = np.concatenate([data["annotations"], data["annotations"][:, :2]], axis=1)
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": doubled})
    with pytest.raises(DatasetError, match=r"devkit: train image 'train/00001\.jpg': "
                                           r"cars_train/00001\.jpg is listed twice in train; fix: "
                                           r"remove the repeated entry"):
        load_dataset("stanford_cars", root)
    with caplog.at_level(logging.WARNING):
        index = load_dataset("stanford_cars", root, integrity="warn")
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


def test_duplicate_test_ids(tree):
    root = tree("inaturalist2019")
    doc = json.loads((root / "test2019.json").read_text())
    doc["images"][1]["id"] = doc["images"][0]["id"]
    (root / "test2019.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"test image '3000': the id names two images in test "
                                           r"\(test2019/.*\.jpg and test2019/.*\.jpg\); fix: give "
                                           r"every image its own id"):
        load_dataset("inaturalist2019", root, integrity="warn")


# ---- conflicting annotations, unknown references ----


def test_coco_conflicting_annotations(tree):
    root = tree("inaturalist2019")
    doc = json.loads((root / "train2019.json").read_text())
    extra = dict(doc["annotations"][0], id=999, category_id=(doc["annotations"][0]["category_id"] + 1) % 4)
    doc["annotations"].append(extra)
    (root / "train2019.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"train2019\.json: annotation #12 \(image 1000\): image "
                                           r"1000 is annotated with both category 0 and 1; fix: keep "
                                           r"one annotation per image"):
        load_dataset("inaturalist2019", root, integrity="warn")


def test_coco_same_annotation_twice_is_accepted(tree):
    root = tree("inaturalist2019")
    doc = json.loads((root / "train2019.json").read_text())
    doc["annotations"].append(dict(doc["annotations"][0], id=999))
    (root / "train2019.json").write_text(json.dumps(doc))
    assert sizes(load_dataset("inaturalist2019", root))["train"] == 12


def test_coco_annotation_of_unknown_image(tree):
    root = tree("inaturalist2019")
    doc = json.loads((root / "train2019.json").read_text())
    doc["annotations"].append({"id": 999, "image_id": 424242, "category_id": 1})
    (root / "train2019.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"annotation #12 \(image 424242\): image 424242 is not in "
                                           r"'images'; fix: remove the annotation or add the image"):
        load_dataset("inaturalist2019", root)


def test_coco_unknown_category(tree):
    root = tree("inaturalist2019")
    doc = json.loads((root / "train2019.json").read_text())
    doc["annotations"][2]["category_id"] = 77
    (root / "train2019.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"train2019\.json.*: train image '1002': category '77' is "
                                           r"not among the dataset's 4 categories; fix:"):
        load_dataset("inaturalist2019", root)


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
                                       "C:\\Windows\\x.jpg"])
def test_paths_leaving_the_root(tree, file_name):
    root = tree("inaturalist2019")
    doc = json.loads((root / "val2019.json").read_text())
    doc["images"][1]["file_name"] = file_name
    (root / "val2019.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"val image '2001': path .* leaves the dataset root; fix: "
                                           r"paths in the metadata must be relative"):
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
    from scipy.io import loadmat, savemat

    root = tree("flowers102")
    ids = loadmat(root / "setid.mat")
    ids["valid"][0, 0] = ids["trnid"][0, 0]
    savemat(root / "setid.mat", {k: ids[k] for k in ("trnid", "valid", "tstid")})
    assert main(["datasets", "info", "flowers102", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "listed in both train and val" in err and len(err.splitlines()) == 1
    assert main(["datasets", "info", "flowers102", "--root", str(root), "--integrity", "warn"]) == 0


def test_pipeline_passes_the_integrity_policy(tree, monkeypatch):
    from scipy.io import loadmat, savemat

    from fgvc.recipes.recipe import load_recipe
    from fgvc.workflows.pipeline import load_recipe_dataset

    root = tree("flowers102")
    ids = loadmat(root / "setid.mat")
    ids["valid"][0, 0] = ids["trnid"][0, 0]
    savemat(root / "setid.mat", {k: ids[k] for k in ("trnid", "valid", "tstid")})
    base = ["dataset.name=flowers102", f"dataset.root={root}", "dataset.options={}"]
    with pytest.raises(DatasetError, match="listed in both"):
        load_recipe_dataset(load_recipe("recipes/quickstart.yaml", base))
    index = load_recipe_dataset(load_recipe("recipes/quickstart.yaml", [*base, "dataset.integrity=warn"]))
    assert len(index.split("train")) == 8
