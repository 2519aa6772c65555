"""Compact sample storage: the same samples as the previous list-of-objects storage on every
layout fixture (what each adapter hands over, stored the previous way beside the new way), the
columnar COCO reader equal to the entry-by-entry one, and the SampleTable sequence behaviour."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.datasets import DatasetError, base, coco, load_dataset
from fgvc.datasets.base import (
    UNLABELLED,
    DatasetIndex,
    RawColumns,
    RawSample,
    Sample,
    SampleTable,
    with_holdout,
)
from fgvc.datasets.columns import StringColumn, all_distinct
from fgvc.datasets.layouts import WRITERS


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> list[tuple[str, str, str, dict]]:
    """(key, dataset, root, options) for every layout writer, imagefolder, csv, synthetic."""
    trees = tmp_path_factory.mktemp("layouts")
    cases = []
    for name, write in WRITERS.items():
        write(trees / name)
        cases.append((name, name, str(trees / name), {}))
    folder = trees / "folders"
    for split, cls in [("train", "cat"), ("train", "dog"), ("val", "cat"), ("test", "")]:
        (folder / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(folder / split / cls / f"{cls or 'x'}1.jpg")
    (folder / "train.csv").write_text("path,label\ntrain/cat/cat1.jpg,cat\ntrain/dog/dog1.jpg,dog\n")
    (folder / "test.csv").write_text("path,label,id\ntest/x1.jpg,,x1\n")
    cases += [("imagefolder", "imagefolder", str(folder), {}), ("csv", "csv", str(folder), {})]
    cases.append(("synthetic", "synthetic", str(trees / "synthetic"),
                  {"num_classes": 3, "train_per_class": 4, "val_per_class": 2,
                   "test_per_class": 2, "min_side": 32, "max_side": 40, "seed": 1}))
    cases.append(("synthetic+holdout", *cases[-1][1:]))
    cases.append(("cub200+holdout", "cub200", str(trees / "cub200"), {}))
    return cases


def previous_storage(index, raw: dict) -> dict[str, list[Sample]]:
    """The samples as the previous storage built them: one ``Sample`` per entry of what the
    adapter handed over (after the integrity checks), labels by the index's category order."""
    label_of = {c: i for i, c in enumerate(index.category_ids)}
    out = {}
    for split, entries in raw.items():
        if isinstance(entries, RawColumns):
            entries = [RawSample(p, None if c is None else str(c), str(i)) for p, c, i in
                       zip(entries.paths, entries.category_ids, entries.image_ids, strict=True)]
        out[split] = [Sample(e.path, UNLABELLED if e.category_id is None
                             else label_of[e.category_id], e.image_id) for e in entries]
    if "train" in out and "val" in out and "trainval" not in out:
        out["trainval"] = out["train"] + out["val"]
    return out


def previous_holdout(samples: list[Sample], fraction: float, seed: int):
    """The previous ``with_holdout`` on a list of ``Sample``."""
    import random

    by_label: dict[int, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    rng = random.Random(seed)
    kept, held = [], []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda s: s.image_id)
        rng.shuffle(group)
        n = max(1, round(fraction * len(group))) if len(group) > 1 else 0
        held += group[:n]
        kept += group[n:]
    return kept, held


def test_same_samples_as_the_previous_storage(fixtures, monkeypatch):
    handed: list = []  # what each adapter passed on: columns or RawSample lists, or Sample lists
    checked = base.checked_splits
    monkeypatch.setattr(base, "checked_splits",
                        lambda splits, file: handed.append(checked(splits, file)) or handed[-1])
    from_samples = SampleTable.from_samples.__func__
    monkeypatch.setattr(SampleTable, "from_samples", classmethod(
        lambda cls, samples: handed.append(list(samples)) or from_samples(cls, handed[-1])))
    for key, name, root, options in fixtures:
        handed.clear()
        index = load_dataset(name, Path(root), options)
        if handed and isinstance(handed[0], dict):  # through build_index
            expected = previous_storage(index, handed[0])
        else:  # the synthetic adapter builds Sample lists itself
            expected = dict(zip(index.splits, handed, strict=True))
        assert index.splits.keys() == expected.keys(), key
        for split, samples in index.splits.items():
            assert isinstance(samples, SampleTable)
            assert list(samples) == expected[split], (key, split)
            np.testing.assert_array_equal(samples.labels, [s.label for s in expected[split]])
            assert index.is_labelled(split) == (bool(expected[split]) and all(
                s.label != UNLABELLED for s in expected[split]))
        assert sum(map(len, expected.values())) > 0, key
        if key.endswith("+holdout"):
            held = with_holdout(index, "train", 0.3, 7)
            kept, out = previous_holdout(expected["train"], 0.3, 7)
            assert list(held.split("train")) == kept and list(held.split("holdout")) == out


def test_columnar_coco_reader_equals_the_entry_by_entry_one(fixtures, monkeypatch):
    by_key = {case[0]: case for case in fixtures}
    for key in ("inaturalist2017", "inaturalist2018", "inaturalist2019", "herbarium2020"):
        _, name, root, options = by_key[key]
        fast = load_dataset(name, Path(root), options)
        with monkeypatch.context() as m:
            m.setattr(coco, "_columns", lambda *a: None)
            slow = load_dataset(name, Path(root), options)
        assert fast.splits.keys() == slow.splits.keys()
        for split in fast.splits:
            assert list(fast.splits[split]) == list(slow.splits[split]), (key, split)
        assert fast.boxes == slow.boxes and fast.category_ids == slow.category_ids


def test_coco_fast_path_falls_back_on_irregular_entries(tmp_path):
    doc = {"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
           "images": [{"id": 1, "file_name": "x.jpg"}, {"id": "2", "file_name": "y.jpg"}],
           "annotations": [{"image_id": "1", "category_id": 2}, {"image_id": 2, "category_id": 1}]}
    (tmp_path / "train.json").write_text(json.dumps(doc))
    index = load_dataset("coco", tmp_path, {"files": {"train": "train.json"}})
    # ids match as text, as they always did, although one side is a number
    assert list(index.split("train")) == [Sample("x.jpg", 1, "1"), Sample("y.jpg", 0, "2")]


@pytest.mark.parametrize("category", [[1], None, True, 1.0])
def test_coco_category_of_another_type_is_one_clear_error(tmp_path, category):
    """A category id that is neither an integer nor text (a list, null, a boolean, a number
    with a fraction) goes entry by entry, which names it, instead of failing inside numpy or
    a set."""
    doc = {"categories": [{"id": 1, "name": "a"}],
           "images": [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"}],
           "annotations": [{"image_id": 1, "category_id": 1},
                           {"image_id": 2, "category_id": category}]}
    (tmp_path / "train.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=rf"train image '2': category "
                                           rf"'{re.escape(str(category))}' is not among the "
                                           r"dataset's 1 categories"):
        load_dataset("coco", tmp_path, {"files": {"train": "train.json"}})


def test_whole_column_checks_decide_regular_files_and_allow_only_nested_overlaps(tmp_path,
                                                                                monkeypatch):
    """A regular iNaturalist 2021 copy passes the whole-column checks without a Python object
    per entry, also when train_mini lists train's own files (nested splits may overlap); an
    overlap of other splits goes entry by entry, which reports it."""
    from fgvc.datasets import integrity
    from fgvc.datasets.layouts import write_inaturalist2021

    write_inaturalist2021(tmp_path)
    per_entry = []
    real = integrity.check_splits
    monkeypatch.setattr(integrity, "check_splits", lambda *a: per_entry.append(1) or real(*a))
    regular = load_dataset("inaturalist2021", tmp_path)
    mini = json.loads((tmp_path / "train_mini.json").read_text())
    train = json.loads((tmp_path / "train.json").read_text())
    for image, listed in zip(mini["images"], train["images"], strict=False):
        image["file_name"] = listed["file_name"]  # train_mini as a subset of train's files
    (tmp_path / "train_mini.json").write_text(json.dumps(mini))
    nested = load_dataset("inaturalist2021", tmp_path)
    assert per_entry == [] and len(nested.split("train_mini")) == len(regular.split("train_mini"))
    val = json.loads((tmp_path / "val.json").read_text())
    val["images"][0]["file_name"] = train["images"][0]["file_name"]
    (tmp_path / "val.json").write_text(json.dumps(val))
    with pytest.raises(DatasetError, match=r"listed in both train and val"):
        load_dataset("inaturalist2021", tmp_path)
    assert per_entry == [1]


def test_hash_collisions_are_confirmed_on_the_paths(tmp_path, monkeypatch):
    """Repeats and cross-split overlaps are found among the paths' hashes; a hash shared by two
    different paths must not send a regular dataset to the entry-by-entry checks (nor pass a
    real repeat). With every hash equal, each finding is decided on the paths themselves."""
    from fgvc.datasets import integrity
    from fgvc.datasets.layouts import write_inaturalist2021

    write_inaturalist2021(tmp_path)
    expected = load_dataset("inaturalist2021", tmp_path)
    per_entry = []
    real = integrity.check_splits
    monkeypatch.setattr(integrity, "check_splits", lambda *a: per_entry.append(1) or real(*a))
    monkeypatch.setattr(base, "hash", lambda value: 7, raising=False)
    colliding = load_dataset("inaturalist2021", tmp_path)
    assert per_entry == [] and colliding.splits.keys() == expected.splits.keys()
    for split in expected.splits:
        assert list(colliding.split(split)) == list(expected.split(split)), split
    val = json.loads((tmp_path / "val.json").read_text())
    val["images"][1]["file_name"] = val["images"][0]["file_name"]
    (tmp_path / "val.json").write_text(json.dumps(val))
    with pytest.raises(DatasetError, match=r"is listed twice in val"):
        load_dataset("inaturalist2021", tmp_path)
    assert per_entry == [1]


@pytest.mark.parametrize("category_ids", [
    [1, 7, 7, -3, 5, 1],  # integers close together: one table lookup
    [1, 7, 10**12, -3],  # spread far apart: binary search
    [2**70, 1],  # beyond int64
    ["1", "x", 7, "07", None],  # text, mixed
    [None, None], [],
])
def test_label_column_matches_a_lookup_per_sample(category_ids):
    from fgvc.datasets.base import _label_column

    label_of = {"1": 0, "7": 1, "07": 2, "-3": 3, "x": 4, None: UNLABELLED}
    expected = [label_of.get(c if c is None or type(c) is str else str(c), -9)
                for c in category_ids]
    got = _label_column(category_ids, label_of, -9)
    assert got.dtype == np.int32 and got.tolist() == expected


def test_all_distinct_ids():
    assert all_distinct(np.array([], np.int64)) and all_distinct(np.array([5], np.int64))
    assert all_distinct(np.array([1, 2, 9], np.int64))
    assert all_distinct(np.array([9, 1, 2], np.int64))
    assert not all_distinct(np.array([1, 2, 2], np.int64))
    assert not all_distinct(np.array([2, 1, 2], np.int64))


def test_string_column_keeps_any_text_and_concatenates():
    ascii_part = ["", "a", "x\ny", "\n", "/abs", ""]
    utf8_part = ["", "a", "\n", "x\ny", "\n\n", "/abs", "é", "train/é.jpg", "\\srv", "."]
    for values in (ascii_part, utf8_part, [], [""], ["", ""]):
        column = StringColumn.build(values)
        assert len(column) == len(values) and list(column) == values
        assert [column[i] for i in range(len(values))] == values
    parts = [ascii_part, [], utf8_part, ascii_part, [""]]
    joined = StringColumn.concat([StringColumn.build(p) for p in parts])
    assert list(joined) == [v for p in parts for v in p]
    assert list(StringColumn.concat([])) == [] and list(StringColumn.concat(
        [StringColumn.build([]), StringColumn.build([])])) == []
    one = StringColumn.build(ascii_part)
    assert StringColumn.concat([one, StringColumn.build([])]) is one  # nothing copied


def test_path_tests_see_each_path_start_in_the_joined_buffer(tmp_path):
    """A newline inside a path never hides an escape, and a path ending in '.' before one
    starting with '.' is not read as '..' (the buffer separates them)."""
    from fgvc.datasets.base import _plain_relative

    assert _plain_relative(StringColumn.build(["a.", ".b", "c/d.jpg"]).buffer)
    assert _plain_relative(StringColumn.build(["é.", ".b"]).buffer)
    for bad in (["a", "/etc/passwd"], ["/x"], ["a", "b/../c"], ["a", "C:x"], ["a", "\\srv"],
                ["é", "/x"], ["é", ".."]):
        assert not _plain_relative(StringColumn.build(bad).buffer), bad


def table() -> SampleTable:
    samples = [Sample(f"d/é{i}.jpg" if i % 3 else f"d/{i}.jpg", i % 4, str(i))
               for i in range(10)]
    return SampleTable.from_samples(samples)


def test_sample_table_is_a_sequence_of_samples():
    t = table()
    samples = list(t)
    assert len(t) == 10 and t[3] == samples[3] and t[-1] == samples[-1]
    assert t[3].path == "d/3.jpg" and t[4].path == "d/é4.jpg"  # UTF-8 round trip
    assert list(t[2:8:3]) == samples[2:8:3]
    assert list(t.take([7, 1])) == [samples[7], samples[1]]
    assert t == samples and t != samples[:-1]
    np.testing.assert_array_equal(t.labels, [s.label for s in samples])
    np.testing.assert_array_equal(t.take([7, 1]).labels, [samples[7].label, samples[1].label])
    joined = t[:4] + t[4:]  # adjacent rows of one store: a range, no copy
    assert isinstance(joined.rows, range) and joined == samples
    assert t[5:] + t[:5] == samples[5:] + samples[:5]
    assert t + [Sample("z", UNLABELLED, "z")] == [*samples, Sample("z", UNLABELLED, "z")]


def test_index_stores_lists_as_tables_and_holdout_shares_the_store():
    samples = list(table())
    index = DatasetIndex("t", Path("."), ["a", "b", "c", "d"], ["1", "2", "3", "4"],
                         {"train": samples, "test": [Sample("t.jpg", UNLABELLED, "t")]})
    assert isinstance(index.split("train"), SampleTable) and index.split("train") == samples
    assert index.is_labelled("train") and not index.is_labelled("test")
    held = with_holdout(index, "train", 0.5, seed=0)
    assert held.split("holdout").store is index.split("train").store
    assert sorted(held.split("train") + held.split("holdout"), key=lambda s: s.image_id) == \
        sorted(samples, key=lambda s: s.image_id)
