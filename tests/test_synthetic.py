"""The embedded dataset: deterministic, fine-grained, varied in size, competition-shaped."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from fgvc.datasets import DatasetError, load_dataset
from fgvc.datasets.synthetic import read_test_labels

OPTS = {"num_classes": 3, "train_per_class": 4, "val_per_class": 2, "test_per_class": 2,
        "min_side": 40, "max_side": 80, "seed": 11}


def digest(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    load_dataset("synthetic", tmp_path / "a", OPTS)
    load_dataset("synthetic", tmp_path / "b", OPTS)
    load_dataset("synthetic", tmp_path / "c", {**OPTS, "seed": 12})
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    images_a = {k: v for k, v in digest(tmp_path / "a").items() if k.endswith(".jpg")}
    images_c = {k: v for k, v in digest(tmp_path / "c").items() if k.endswith(".jpg")}
    assert set(images_a.values()).isdisjoint(images_c.values())


def test_parallel_generation_writes_the_same_files(tmp_path, monkeypatch):
    from fgvc.datasets import synthetic

    load_dataset("synthetic", tmp_path / "serial", OPTS)
    monkeypatch.setattr(synthetic, "PARALLEL_FROM", 1)  # worker processes even for 24 images
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    load_dataset("synthetic", tmp_path / "parallel", OPTS)
    assert digest(tmp_path / "serial") == digest(tmp_path / "parallel")


def test_splits_labels_and_held_back_answers(tmp_path):
    index = load_dataset("synthetic", tmp_path / "d", OPTS)
    assert index.num_classes == 3
    assert {k: len(v) for k, v in index.splits.items()} == {"train": 12, "val": 6, "test": 6}
    assert index.is_labelled("train") and index.is_labelled("val")
    assert not index.is_labelled("test")
    # Test labels live apart, as in a competition.
    header = (tmp_path / "d" / "test.csv").read_text().splitlines()[0].split(",")
    assert header == ["id", "path"]
    answers = read_test_labels(tmp_path / "d")
    assert sorted(answers) == sorted(s.image_id for s in index.split("test"))
    assert set(answers.values()) <= set(index.category_ids)
    # Balanced classes, ids unique across splits.
    assert sorted(s.label for s in index.split("train")) == [0] * 4 + [1] * 4 + [2] * 4
    ids = [s.image_id for split in index.splits.values() for s in split]
    assert len(ids) == len(set(ids))


def test_images_vary_in_size_and_aspect(tmp_path):
    index = load_dataset("synthetic", tmp_path / "e", {**OPTS, "train_per_class": 10})
    sizes = {Image.open(index.root / s.path).size for s in index.split("train")}
    aspects = {round(w / h, 1) for w, h in sizes}
    assert len(sizes) > 10
    assert min(aspects) < 0.9 and max(aspects) > 1.1
    assert all(40 <= min(w, h) <= 80 for w, h in sizes)


def test_other_options_on_an_existing_root_are_refused(tmp_path):
    load_dataset("synthetic", tmp_path / "f", OPTS)
    with pytest.raises(DatasetError, match="generated with other options"):
        load_dataset("synthetic", tmp_path / "f", {**OPTS, "seed": 99})


@pytest.mark.parametrize("options,message", [
    ({"num_classes": 1}, "num_classes: must be between 2 and 8"),
    ({"colour": 1}, "unknown option"),
    ({"min_side": 100, "max_side": 50}, "min_side <= max_side"),
])
def test_bad_options(tmp_path, options, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset("synthetic", tmp_path / "g", options)


def test_a_foreign_folder_is_not_overwritten(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="holds no synthetic dataset"):
        load_dataset("synthetic", root, OPTS)
    assert (root / "thesis.txt").read_text() == "keep me"
