"""The copies people actually hold: mirrors, torchvision's folders, script layouts, later
editions and Hugging Face Parquet/Arrow files. Each tree is built in its real layout; split
counts and category ids are exact, and checked against torchvision's own dataset classes
where torchvision reads the same layout."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.datasets import DatasetError, load_dataset
from fgvc.datasets.decode import open_rgb
from fgvc.datasets.layouts import (
    write_birdsnap,
    write_herbarium2020,
    write_inaturalist,
    write_inaturalist2021,
    write_inaturalist_torchvision,
    write_oxford_pets,
    write_parquet,
    write_stanford_cars,
)


def sizes(index) -> dict[str, int]:
    return {k: len(v) for k, v in index.splits.items()}


def labelled_paths(index, split: str) -> set[tuple[str, str]]:
    return {(s.path, index.category_ids[s.label]) for s in index.split(split)}


# ---- Stanford Cars ----


def test_cars_kaggle_mirror_reads_devkit_and_labels_test_from_cars_annos(tmp_path):
    write_stanford_cars(tmp_path / "official")
    write_stanford_cars(tmp_path / "mirror", kaggle_mirror=True)
    official = load_dataset("stanford_cars", tmp_path / "official")
    mirror = load_dataset("stanford_cars", tmp_path / "mirror")
    assert sizes(mirror) == {"train": 12, "test": 12}
    assert mirror.is_labelled("test")
    for split in ("train", "test"):
        assert all((mirror.root / s.path).is_file() for s in mirror.split(split))
        assert all(s.path.startswith(f"cars_{split}/cars_{split}/") for s in mirror.split(split))
        # The same labels as the official cars_test_annos_withlabels.mat gives.
        strip = {(p.split("/")[-1], c) for p, c in labelled_paths(mirror, split)}
        assert strip == {(p.split("/")[-1], c) for p, c in labelled_paths(official, split)}
    # Ids and boxes unique per split: 00001.jpg exists in both, with different boxes.
    ids = [s.image_id for split in ("train", "test") for s in mirror.split(split)]
    assert len(ids) == len(set(ids)) == 24 and "train/00001.jpg" in ids and "test/00001.jpg" in ids
    assert len(mirror.boxes) == 24
    assert mirror.boxes == official.boxes


def test_cars_matches_torchvision(tmp_path):
    from torchvision.datasets import StanfordCars

    write_stanford_cars(tmp_path / "stanford_cars")
    index = load_dataset("stanford_cars", tmp_path / "stanford_cars")
    for split in ("train", "test"):
        tv = StanfordCars(tmp_path, split=split, download=False)
        theirs = {(Path(p).relative_to(index.root).as_posix(), t) for p, t in tv._samples}
        ours = {(s.path, s.label) for s in index.split(split)}
        assert ours == theirs and len(ours) == 12
    assert index.classes == tv.classes


def test_cars_mirror_with_mismatching_cars_annos_leaves_test_unlabelled(tmp_path, caplog):
    from scipy.io import loadmat, savemat

    write_stanford_cars(tmp_path, kaggle_mirror=True)
    data = loadmat(tmp_path / "cars_annos.mat")
    data["annotations"][0, 1]["bbox_x1"] = np.uint16(30)  # the first test entry moves
    savemat(tmp_path / "cars_annos.mat", {k: v for k, v in data.items() if not k.startswith("__")})
    with caplog.at_level(logging.WARNING):
        index = load_dataset("stanford_cars", tmp_path)
    assert not index.is_labelled("test") and len(index.split("test")) == 12
    assert "does not match test/00001.jpg" in caplog.text


def test_cars_labels_file_anywhere_known(tmp_path):
    write_stanford_cars(tmp_path, kaggle_mirror=True)
    write_stanford_cars(tmp_path / "ref")
    (tmp_path / "cars_annos.mat").unlink()
    shutil.copy(tmp_path / "ref" / "cars_test_annos_withlabels.mat",
                tmp_path / "car_devkit" / "devkit" / "cars_test_annos_withlabels.mat")
    index = load_dataset("stanford_cars", tmp_path)
    assert index.is_labelled("test")


def test_cars_annos_without_car_ims_or_devkit_is_an_error(tmp_path):
    write_stanford_cars(tmp_path, kaggle_mirror=True)
    shutil.rmtree(tmp_path / "car_devkit")
    with pytest.raises(DatasetError, match=r"cars_annos\.mat lists images under car_ims/, which is "
                                           r"missing.*car_devkit/devkit"):
        load_dataset("stanford_cars", tmp_path)


def test_pets_matches_torchvision(tmp_path):
    from torchvision.datasets import OxfordIIITPet

    write_oxford_pets(tmp_path / "oxford-iiit-pet")
    index = load_dataset("oxford_pets", tmp_path / "oxford-iiit-pet")
    for split in ("trainval", "test"):
        tv = OxfordIIITPet(tmp_path, split=split, download=False)
        theirs = {(Path(p).relative_to(index.root).as_posix(), t)
                  for p, t in zip(tv._images, tv._labels, strict=True)}
        assert {(s.path, s.label) for s in index.split(split)} == theirs


def test_flowers_matches_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import Flowers102

    from fgvc.datasets.layouts import write_flowers102

    write_flowers102(tmp_path / "flowers-102")
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)  # md5 of the real files
    index = load_dataset("flowers102", tmp_path / "flowers-102")
    for split in ("train", "val", "test"):
        tv = Flowers102(tmp_path, split=split, download=False)
        theirs = {(Path(p).relative_to(index.root).as_posix(), t)
                  for p, t in zip(tv._image_files, tv._labels, strict=True)}
        assert {(s.path, int(index.category_ids[s.label]) - 1) for s in index.split(split)} == theirs


# ---- iNaturalist ----


def test_inat2021_official_has_train_mini(tmp_path):
    write_inaturalist2021(tmp_path)
    index = load_dataset("inaturalist2021", tmp_path)
    assert sizes(index) == {"train": 16, "train_mini": 8, "val": 4, "test": 4, "trainval": 20}
    assert index.category_ids == ["0", "1", "2", "3"]
    doc = json.loads((tmp_path / "train_mini.json").read_text())
    truth = {str(a["image_id"]): str(a["category_id"]) for a in doc["annotations"]}
    assert {s.image_id: index.category_ids[s.label] for s in index.split("train_mini")} == truth
    assert all(s.path.startswith("train_mini/") and (tmp_path / s.path).is_file()
               for s in index.split("train_mini"))


def test_inat2021_mini_only_copy(tmp_path):
    write_inaturalist2021(tmp_path, full_train=False)
    assert not (tmp_path / "train.json").exists()
    index = load_dataset("inaturalist2021", tmp_path)
    assert sizes(index) == {"train_mini": 8, "val": 4, "test": 4}
    assert index.category_ids == ["0", "1", "2", "3"]


@pytest.mark.parametrize("version,split", [("2021_train", "train"),
                                           ("2021_train_mini", "train_mini"),
                                           ("2021_valid", "val")])
def test_inat2021_torchvision_folders_match_torchvision(tmp_path, version, split):
    from torchvision.datasets import INaturalist

    write_inaturalist2021(tmp_path, torchvision=True)
    index = load_dataset("inaturalist2021", tmp_path)
    assert sizes(index) == {"train": 16, "train_mini": 8, "val": 4, "trainval": 20}
    tv = INaturalist(tmp_path, version=version, download=False)
    theirs = {(f"{version}/{tv.all_categories[c]}/{f}", str(c)) for c, f in tv.index}
    assert labelled_paths(index, split) == theirs
    assert index.classes[1] == "Genus1 species1"


def test_inat2021_official_json_and_torchvision_folders_agree(tmp_path):
    write_inaturalist2021(tmp_path / "tv", torchvision=True)
    write_inaturalist2021(tmp_path / "official")
    tv = load_dataset("inaturalist2021", tmp_path / "tv")
    official = load_dataset("inaturalist2021", tmp_path / "official")
    strip = lambda pairs: {(p.split("/", 1)[1], c) for p, c in pairs}  # noqa: E731
    for split in ("train", "train_mini", "val"):
        assert strip(labelled_paths(tv, split)) == strip(labelled_paths(official, split))


@pytest.mark.parametrize("year", [2017, 2018, 2019])
def test_inat_torchvision_merged_folder_matches_torchvision(tmp_path, year):
    from torchvision.datasets import INaturalist

    write_inaturalist_torchvision(tmp_path, year)
    index = load_dataset(f"inaturalist{year}", tmp_path)
    assert sizes(index) == {"trainval": 16}
    tv = INaturalist(tmp_path, version=str(year), download=False)
    theirs = {(f"{year}/{tv.all_categories[c]}/{f}", str(c)) for c, f in tv.index}
    assert labelled_paths(index, "trainval") == theirs


@pytest.mark.parametrize("year", [2017, 2018])
def test_inat_torchvision_folder_with_official_json_gives_official_ids_and_splits(tmp_path, year):
    write_inaturalist(tmp_path / "official", year)
    write_inaturalist_torchvision(tmp_path / "tv", year, keep_json=True)
    official = load_dataset(f"inaturalist{year}", tmp_path / "official")
    tv = load_dataset(f"inaturalist{year}", tmp_path / "tv")
    assert sizes(tv) == {"train": 12, "val": 4, "trainval": 16}
    for split in ("train", "val"):
        assert all((tv.root / s.path).is_file() and s.path.startswith(f"{year}/")
                   for s in tv.split(split))
        assert {(s.image_id, tv.category_ids[s.label]) for s in tv.split(split)} == \
            {(s.image_id, official.category_ids[s.label]) for s in official.split(split)}


def test_inat_torchvision_inner_folder_names_the_root_to_give(tmp_path):
    write_inaturalist2021(tmp_path, torchvision=True)
    with pytest.raises(DatasetError, match=r"one of torchvision's version folders; give its parent"):
        load_dataset("inaturalist2021", tmp_path / "2021_train_mini")


def test_inat2017_official_folder_is_train_val_images(tmp_path):
    write_inaturalist(tmp_path, 2017)
    index = load_dataset("inaturalist2017", tmp_path)
    assert all(s.path.startswith("train_val_images/") and (tmp_path / s.path).is_file()
               for s in index.split("train"))


def test_inat_without_any_layout_names_both(tmp_path):
    with pytest.raises(DatasetError, match=r"none of train\.json, train_mini\.json, val\.json.*"
                                           r"torchvision's 2021_train / 2021_train_mini / 2021_valid"):
        load_dataset("inaturalist2021", tmp_path)


# ---- Birdsnap ----


def test_birdsnap_script_layout(tmp_path):
    write_birdsnap(tmp_path, images="download/images")
    index = load_dataset("birdsnap", tmp_path)
    assert sizes(index) == {"train": 10, "test": 4}
    assert index.missing == {"train": 2, "test": 0}
    assert all(s.path.startswith("download/images/") and (tmp_path / s.path).is_file()
               for split in ("train", "test") for s in index.split(split))


def test_birdsnap_with_no_image_downloaded_is_an_error(tmp_path):
    write_birdsnap(tmp_path)
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(DatasetError, match=r"none of the 16 images listed in .*images\.txt is under "
                                           r".*images or .*download/images"):
        load_dataset("birdsnap", tmp_path)


# ---- Herbarium ----


@pytest.mark.parametrize("edition", [2020, 2021, 2022])
def test_herbarium_editions(tmp_path, edition):
    write_herbarium2020(tmp_path, num_classes=5, edition=edition)
    index = load_dataset("herbarium2020", tmp_path)
    assert sizes(index) == {"train": 10, "test": 5}
    assert index.num_classes == 5  # from the metadata, not a fixed 32,093
    assert index.category_ids == ["100", "101", "102", "103", "104"]
    assert index.classes[0] == "Plant 0"
    for split in ("train", "test"):
        assert all((tmp_path / s.path).is_file() for s in index.split(split))
    assert not index.is_labelled("test")
    if edition == 2022:
        assert index.split("train")[0].path.startswith("train_images/")
        assert index.split("train")[0].image_id == "00000__000"


def test_herbarium2020_nybg2020_folder_accepted(tmp_path):
    write_herbarium2020(tmp_path / "nybg2020")
    assert sizes(load_dataset("herbarium2020", tmp_path)) == {"train": 8, "test": 4}


def test_herbarium_path_prefix_survives_a_missing_first_image(tmp_path):
    write_herbarium2020(tmp_path, edition=2021)
    doc = json.loads((tmp_path / "train" / "metadata.json").read_text())
    (tmp_path / "train" / doc["images"][0]["file_name"]).unlink()
    index = load_dataset("herbarium2020", tmp_path)
    paths = [s.path for s in index.split("train")]
    assert paths[0] == "train/" + doc["images"][0]["file_name"]
    assert all((tmp_path / p).is_file() for p in paths[1:])


def test_herbarium_without_metadata_or_with_two_editions_names_the_candidates(tmp_path):
    with pytest.raises(DatasetError, match=r"train/metadata\.json.*2020/2021.*train_metadata\.json"):
        load_dataset("herbarium2020", tmp_path)
    write_herbarium2020(tmp_path, edition=2021)
    write_herbarium2020(tmp_path, edition=2022)
    with pytest.raises(DatasetError, match=r"two editions' metadata \(train/metadata\.json and "
                                           r"train_metadata\.json\); fix: give the root of one"):
        load_dataset("herbarium2020", tmp_path)


# ---- Parquet / Arrow ----


@pytest.mark.parametrize("storage", ["bytes", "path", "arrow"])
def test_parquet_hub_copies(tmp_path, storage):
    write_parquet(tmp_path, storage=storage)
    index = load_dataset("parquet", tmp_path)
    assert sizes(index) == {"train": 12, "val": 4, "test": 4, "trainval": 16}
    assert index.classes == ["Class 0", "Class 1", "Class 2", "Class 3"]  # ClassLabel names
    assert index.category_ids == ["0", "1", "2", "3"]
    assert not index.is_labelled("test")
    assert [s.label for s in index.split("train")] == [i % 4 for i in range(12)]
    assert index.split("train")[5].image_id == "train-5"
    sample = index.split("train")[7]
    if storage == "path":
        assert sample.path == "images/train_0007.jpg"
    else:
        folder = "data/train-00000-of-00001.parquet" if storage == "bytes" \
            else "train/data-00000-of-00001.arrow"
        assert sample.path == f"{folder}#image[7]"
    # The decoded image is the JPEG written for that row.
    write_parquet(tmp_path / "ref", storage="path")
    expected = np.asarray(Image.open(tmp_path / "ref" / "images" / "train_0007.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(open_rgb(tmp_path, sample.path)), expected)


def test_parquet_without_class_names_uses_label_values(tmp_path):
    write_parquet(tmp_path, class_names=False)
    index = load_dataset("parquet", tmp_path)
    assert index.category_ids == ["10", "11", "12", "13"] and index.classes == index.category_ids


def test_parquet_row_group_cache_stays_bounded(tmp_path, monkeypatch):
    from fgvc.datasets import parquet

    write_parquet(tmp_path, row_group_size=2)
    index = load_dataset("parquet", tmp_path)
    monkeypatch.setattr(parquet, "CACHE_BYTES", 1)
    parquet._row_groups.clear()
    for sample in index.split("train"):
        assert open_rgb(tmp_path, sample.path).mode == "RGB"
        assert len(parquet._row_groups) == 1


def test_parquet_options_and_errors(tmp_path):
    write_parquet(tmp_path)
    index = load_dataset("parquet", tmp_path, {"files": {"train": "data/train-*.parquet"},
                                               "id_column": "image_id"})
    assert sizes(index) == {"train": 12}
    with pytest.raises(DatasetError, match=r"no column 'pixels' \(dataset.options.image_column\)"):
        load_dataset("parquet", tmp_path, {"image_column": "pixels"})
    with pytest.raises(DatasetError, match=r"unknown option\(s\) colour for parquet"):
        load_dataset("parquet", tmp_path, {"colour": 1})
    with pytest.raises(DatasetError, match=r"'data/nothing\*' matches no file"):
        load_dataset("parquet", tmp_path, {"files": {"train": "data/nothing*"}})
    with pytest.raises(DatasetError, match=r"no \.parquet or \.arrow file under"):
        load_dataset("parquet", tmp_path / "empty")
    (tmp_path / "inner").mkdir()
    with pytest.raises(DatasetError, match=r"'\.\./data/\*\.parquet' leaves the dataset root"):
        load_dataset("parquet", tmp_path / "inner", {"files": {"train": "../data/*.parquet"}})
    (tmp_path / "data" / "extra-00000-of-00001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"extra-00000-of-00001\.parquet: not a readable "
                                           r"Parquet/Arrow file"):
        load_dataset("parquet", tmp_path)


def test_parquet_label_outside_class_label_range(tmp_path):
    import pyarrow.parquet as pq

    write_parquet(tmp_path)
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[3] = 9
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=r"train-00000-of-00001\.parquet: row 3: label \(ClassLabel "
                                           r"index\) 9 is outside the declared range 0\.\.3; fix:"):
        load_dataset("parquet", tmp_path)


def test_parquet_images_feed_the_training_loader(tmp_path):
    import torch

    from fgvc.datasets.images import ImageDataset, collate_skipping_bad

    write_parquet(tmp_path)
    index = load_dataset("parquet", tmp_path)

    def to_tensor(image):
        return torch.from_numpy(np.asarray(image.resize((16, 16))).copy()).permute(2, 0, 1)

    dataset = ImageDataset(index.root, index.split("train"), to_tensor)
    images, labels, _, bad = collate_skipping_bad([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 1, 2, 3] and bad == 0
