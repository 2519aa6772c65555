"""Every adapter reads a small tree in its dataset's exact official layout, and refuses broken
variants with a message that names the file (and line) at fault."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fgvc.datasets import DatasetError, load_dataset
from fgvc.datasets.layouts import WRITERS, write_stanford_cars


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """One small tree per dataset, written once for the module."""
    base = tmp_path_factory.mktemp("layouts")
    roots = {}
    for name, write in WRITERS.items():
        roots[name] = base / name
        write(roots[name])
    return roots


def split_sizes(index) -> dict[str, int]:
    return {k: len(v) for k, v in index.splits.items()}


@pytest.mark.parametrize("year", [2017, 2018, 2019])
def test_inaturalist(trees, year):
    index = load_dataset(f"inaturalist{year}", trees[f"inaturalist{year}"])
    assert split_sizes(index) == {"train": 12, "val": 4, "test": 4, "trainval": 16}
    assert index.category_ids == ["0", "1", "2", "3"]
    assert index.classes == ["Species 0", "Species 1", "Species 2", "Species 3"]
    doc = json.loads((trees[f"inaturalist{year}"] / f"train{year}.json").read_text())
    by_id = {str(a["image_id"]): str(a["category_id"]) for a in doc["annotations"]}
    for sample in index.split("train"):
        assert index.category_ids[sample.label] == by_id[sample.image_id]
        assert (index.root / sample.path).is_file()
    assert all(s.label == -1 for s in index.split("test"))
    assert index.split("test")[0].path.startswith(f"test{year}/")
    assert (len(index.boxes) > 0) == (year == 2017)  # only 2017 ships boxes


def test_herbarium2019_keys_by_folder_and_maps_numerically(trees):
    index = load_dataset("herbarium2019", trees["herbarium2019"])
    assert split_sizes(index) == {"train": 24, "val": 12, "test": 12, "trainval": 36}
    # Numeric, not string, order: "10" comes after "9".
    assert index.category_ids == [str(i) for i in range(12)]
    ids = [s.image_id for s in index.split("train")]
    assert len(ids) == len(set(ids))  # unique although file names repeat across folders
    assert "0/00000.jpg" in ids and "1/00000.jpg" in ids
    assert {s.image_id for s in index.split("test")} == {f"{i:05d}.jpg" for i in range(12)}
    ten = [s for s in index.split("train") if s.path.startswith("train/10/")]
    assert ten and all(index.category_ids[s.label] == "10" for s in ten)


def test_herbarium2020_coco_metadata(trees):
    index = load_dataset("herbarium2020", trees["herbarium2020"])
    assert split_sizes(index) == {"train": 8, "test": 4}
    assert index.category_ids == ["100", "101", "102", "103"]
    sample = index.split("train")[0]
    assert sample.path.startswith("train/images/") and (index.root / sample.path).is_file()


def test_generic_coco_adapter(trees):
    root = trees["inaturalist2019"]
    index = load_dataset("coco", root, {"files": {"train": "train2019.json", "val": "val2019.json"}})
    assert split_sizes(index) == {"train": 12, "val": 4, "trainval": 16}
    with pytest.raises(DatasetError, match="options.files"):
        load_dataset("coco", root, {})


@pytest.mark.parametrize("variant", ["devkit", "labels_in_devkit", "single_file"])
def test_stanford_cars(tmp_path, variant):
    write_stanford_cars(tmp_path, labels_in_devkit=variant == "labels_in_devkit",
                        single_file=variant == "single_file")
    index = load_dataset("stanford_cars", tmp_path)
    assert split_sizes(index) == {"train": 12, "test": 12}
    assert index.category_ids == ["1", "2", "3", "4"]
    assert index.classes[0] == "Make0 Model0 2012"
    assert index.is_labelled("test")
    first = index.split("train")[0]
    assert index.category_ids[first.label] == "1"
    assert (index.root / first.path).is_file()
    x, y, w, h = index.boxes[first.image_id]
    assert (x, y) == (1.0, 2.0) and w > 0 and h > 0


def test_stanford_cars_without_test_labels_is_unlabelled(tmp_path):
    write_stanford_cars(tmp_path)
    (tmp_path / "cars_test_annos_withlabels.mat").unlink()
    index = load_dataset("stanford_cars", tmp_path)
    assert not index.is_labelled("test") and len(index.split("test")) == 12


def test_cub200(trees):
    index = load_dataset("cub200", trees["cub200"])
    assert split_sizes(index) == {"train": 12, "test": 12}
    assert index.classes[0] == "001.Species_0"
    labels = dict(line.split() for line in
                  (trees["cub200"] / "CUB_200_2011/image_class_labels.txt").read_text().splitlines())
    for sample in index.split("test"):
        assert index.category_ids[sample.label] == labels[sample.image_id]
        assert "_test_" in sample.path and (index.root / sample.path).is_file()
    assert len(index.boxes) == 24


def test_flowers102_splits_and_trainval(trees):
    index = load_dataset("flowers102", trees["flowers102"])
    assert split_sizes(index) == {"train": 8, "val": 8, "test": 16, "trainval": 16}
    from scipy.io import loadmat

    labels = loadmat(trees["flowers102"] / "imagelabels.mat")["labels"].ravel()
    for sample in index.split("test"):
        number = int(sample.image_id.split("_")[1])
        assert index.category_ids[sample.label] == str(labels[number - 1])


def test_oxford_pets(trees):
    index = load_dataset("oxford_pets", trees["oxford_pets"])
    assert split_sizes(index) == {"trainval": 12, "test": 12}
    assert index.classes == ["Abyssinian", "american bulldog", "Bengal", "beagle"]
    assert index.split("trainval")[0] == type(index.split("trainval")[0])(
        "images/Abyssinian_0.jpg", 0, "Abyssinian_0")
    assert set(index.boxes) == {s.image_id for s in index.split("trainval")}
    from PIL import Image

    w, h = Image.open(index.root / "images" / "Abyssinian_0.jpg").size
    assert index.boxes["Abyssinian_0"] == (2.0, 3.0, w - 4.0, h - 6.0)


def test_oxford_pets_broken_xml(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "oxford_pets")
    (root / "annotations" / "xmls" / "Bengal_2.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"Bengal_2\.xml: expected a Pascal VOC annotation"):
        load_dataset("oxford_pets", root)


def test_nabirds_maps_noncontiguous_leaf_ids(trees):
    index = load_dataset("nabirds", trees["nabirds"])
    assert index.category_ids == ["295", "302", "309", "316"]  # inner nodes 0 and 1 dropped
    assert index.classes[0] == "Leaf Bird 295"  # names keep their spaces
    assert split_sizes(index) == {"train": 12, "test": 12}
    assert all(s.path.startswith(f"images/{int(index.category_ids[s.label]):04d}/")
               for s in index.split("train"))


def test_birdsnap_reports_and_skips_missing_images(trees, caplog):
    with caplog.at_level("WARNING"):
        index = load_dataset("birdsnap", trees["birdsnap"])
    assert index.missing == {"train": 2, "test": 0}
    assert "2 listed image(s) not downloaded and skipped" in caplog.text
    assert split_sizes(index) == {"train": 10, "test": 4}
    assert all((index.root / s.path).is_file() for s in index.split("train"))


def test_imagefolder_and_csv(tmp_path):
    from PIL import Image

    for split, cls in [("train", "cat"), ("train", "dog"), ("val", "cat"), ("val", "dog")]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "a.jpg")
    (tmp_path / "test").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "x.jpg")
    index = load_dataset("imagefolder", tmp_path)
    assert index.classes == ["cat", "dog"]
    assert split_sizes(index) == {"train": 2, "val": 2, "test": 1, "trainval": 4}
    assert not index.is_labelled("test")

    (tmp_path / "train.csv").write_text("path,label\ntrain/cat/a.jpg,cat\ntrain/dog/a.jpg,dog\n")
    (tmp_path / "test.csv").write_text("path,label,id\ntest/x.jpg,,x1\n")
    index = load_dataset("csv", tmp_path)
    assert index.classes == ["cat", "dog"]
    assert index.split("test")[0].image_id == "x1" and index.split("test")[0].label == -1


# ---- broken variants: each error names the file (and line) and what was expected ----


def test_missing_root_names_file_layout_and_card(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cub200", tmp_path / "nowhere")
    message = str(info.value)
    assert "images.txt" in message and "expected layout" in message
    assert "fgvc datasets card cub200" in message


@pytest.mark.parametrize("name,file_name", [
    ("inaturalist2019", "train2019.json"),
    ("flowers102", "setid.mat"),
    ("oxford_pets", "annotations/test.txt"),
    ("birdsnap", "species.txt"),
    ("herbarium2019", "train"),
])
def test_missing_metadata_file(trees, tmp_path, name, file_name):
    import shutil

    root = tmp_path / name
    shutil.copytree(trees[name], root)
    target = root / file_name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError, match=f"missing .*{Path(file_name).name}.*fgvc datasets card {name}`"):
        load_dataset(name, root)


def test_stanford_cars_missing_devkit_file(tmp_path):
    write_stanford_cars(tmp_path)
    (tmp_path / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(DatasetError, match=r"missing .*cars_meta\.mat.*fgvc datasets card stanford_cars`"):
        load_dataset("stanford_cars", tmp_path)


def copy_tree(trees, tmp_path, name) -> Path:
    import shutil

    root = tmp_path / name
    shutil.copytree(trees[name], root)
    return root


def test_malformed_line_names_file_and_line(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "cub200") / "CUB_200_2011"
    lines = (root / "image_class_labels.txt").read_text().splitlines()
    lines[4] = "5"  # the class id is missing
    (root / "image_class_labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"image_class_labels\.txt:5: expected 2 fields, got 1"):
        load_dataset("cub200", root.parent)


def test_non_integer_class_id(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "oxford_pets")
    path = root / "annotations" / "test.txt"
    lines = path.read_text().splitlines()
    fields = lines[2].split()
    lines[2] = " ".join([fields[0], "one", *fields[2:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"test\.txt:3: class id must be an integer, got 'one'"):
        load_dataset("oxford_pets", root)


def test_bad_split_flag(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "nabirds") / "nabirds"
    path = root / "train_test_split.txt"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " yes"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"train_test_split\.txt:1: expected 1 \(train\) or 0"):
        load_dataset("nabirds", root.parent)


def test_image_without_label(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "cub200") / "CUB_200_2011"
    path = root / "image_class_labels.txt"
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DatasetError, match=r"image 1 of images\.txt is missing from .*"
                                           r"image_class_labels\.txt"):
        load_dataset("cub200", root.parent)


def test_broken_json_names_file_and_line(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "inaturalist2018")
    (root / "val2018.json").write_text('{"images": [\n{"id": 1,\n')
    with pytest.raises(DatasetError, match=r"val2018\.json:3: not valid JSON"):
        load_dataset("inaturalist2018", root)


def test_json_with_bom_nan_and_big_integers_is_read_and_other_encodings_are_refused(tmp_path):
    """``read_json``: a byte-order mark is skipped, NaN and integers beyond 64 bits are read as
    the standard library reads them, text that is not UTF-8 is one line naming the file."""
    from fgvc.datasets.files import read_json

    plain = tmp_path / "plain.json"
    plain.write_bytes(b"\xef\xbb\xbf" + json.dumps({"images": [{"id": 1}]}).encode())
    assert read_json(plain) == {"images": [{"id": 1}]}
    odd = tmp_path / "odd.json"
    odd.write_text('{"a": NaN, "b": 123456789012345678901234567890}')
    value = read_json(odd)
    assert np.isnan(value["a"]) and value["b"] == 123456789012345678901234567890
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "Bouvreuil pivoin\u00e9"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.json: not UTF-8 text"):
        read_json(latin)


def test_json_annotation_without_category(trees, tmp_path):
    root = copy_tree(trees, tmp_path, "inaturalist2019")
    doc = json.loads((root / "train2019.json").read_text())
    del doc["annotations"][3]["category_id"]
    (root / "train2019.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"train2019\.json: annotation #3 lacks 'category_id'"):
        load_dataset("inaturalist2019", root)


def test_flowers_setid_beyond_labels(trees, tmp_path):
    from scipy.io import savemat

    root = copy_tree(trees, tmp_path, "flowers102")
    savemat(root / "setid.mat", {"trnid": np.array([[1, 999]]), "valid": np.array([[2]]),
                                 "tstid": np.array([[3]])})
    with pytest.raises(DatasetError, match=r"setid\.mat: trnid lists image 999"):
        load_dataset("flowers102", root)


def test_cars_mat_without_annotations_variable(tmp_path):
    from scipy.io import savemat

    write_stanford_cars(tmp_path)
    savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"other": np.zeros(3)})
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat: lacks variable\(s\) annotations"):
        load_dataset("stanford_cars", tmp_path)


def test_missing_image_is_found_by_verify(trees, tmp_path, capsys):
    from fgvc.cli import main

    root = copy_tree(trees, tmp_path, "oxford_pets")
    (root / "images" / "Bengal_2.jpg").unlink()
    (root / "images" / "beagle_3.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["datasets", "verify", "oxford_pets", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "missing: images/Bengal_2.jpg" in out
    assert "unreadable: images/beagle_3.jpg" in out
