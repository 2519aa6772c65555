"""Compact sample storage: the same samples as the previous list-of-objects storage on every
layout fixture (the previous code is taken from git and run beside the current one), the
columnar COCO reader equal to the entry-by-entry one, and the SampleTable sequence behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.datasets import coco, load_dataset
from fgvc.datasets.base import (
    UNLABELLED,
    DatasetIndex,
    Sample,
    SampleTable,
    with_holdout,
)
from fgvc.datasets.layouts import WRITERS

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = "edb7d9a"  # the last commit storing one Sample object per image

DUMP = """
import json, sys
from pathlib import Path
from fgvc.datasets import load_dataset
from fgvc.datasets.base import with_holdout
out = {}
for key, name, root, options in json.loads(sys.argv[1]):
    index = load_dataset(name, Path(root), options)
    if key.endswith("+holdout"):
        index = with_holdout(index, "train", 0.3, 7)
    out[key] = {"classes": index.classes, "category_ids": index.category_ids,
                "boxes": {k: list(v) for k, v in index.boxes.items()}, "missing": index.missing,
                "labelled": {s: index.is_labelled(s) for s in index.splits},
                "splits": {s: [[x.path, x.label, x.image_id] for x in v]
                           for s, v in index.splits.items()}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> list[tuple[str, str, str, dict]]:
    """(key, dataset, root, options) for every layout writer, imagefolder, csv, synthetic."""
    base = tmp_path_factory.mktemp("layouts")
    cases = []
    for name, write in WRITERS.items():
        write(base / name)
        cases.append((name, name, str(base / name), {}))
    folder = base / "folders"
    for split, cls in [("train", "cat"), ("train", "dog"), ("val", "cat"), ("test", "")]:
        (folder / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(folder / split / cls / f"{cls or 'x'}1.jpg")
    (folder / "train.csv").write_text("path,label\ntrain/cat/cat1.jpg,cat\ntrain/dog/dog1.jpg,dog\n")
    (folder / "test.csv").write_text("path,label,id\ntest/x1.jpg,,x1\n")
    cases += [("imagefolder", "imagefolder", str(folder), {}), ("csv", "csv", str(folder), {})]
    cases.append(("synthetic", "synthetic", str(base / "synthetic"),
                  {"num_classes": 3, "train_per_class": 4, "val_per_class": 2,
                   "test_per_class": 2, "min_side": 32, "max_side": 40, "seed": 1}))
    cases.append(("synthetic+holdout", *cases[-1][1:]))
    cases.append(("cub200+holdout", "cub200", str(base / "cub200"), {}))
    return cases


def dump(cases, code_root: Path) -> dict:
    """What the fgvc package under ``code_root`` reads (run there: ``-c`` puts the working
    directory first on the path)."""
    out = subprocess.run([sys.executable, "-c", DUMP, json.dumps(cases)], check=True,
                         capture_output=True, text=True, cwd=code_root,
                         env={**os.environ, "PYTHONPATH": str(code_root)})
    return json.loads(out.stdout)


def test_same_samples_as_the_previous_storage(fixtures, tmp_path):
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS, "fgvc"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} not in this checkout's history")
    old_root = tmp_path / "previous"
    old_root.mkdir()
    subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
    for _, name, root, options in fixtures:  # the synthetic generator runs once, here
        load_dataset(name, Path(root), options)
    new, old = dump(fixtures, ROOT), dump(fixtures, old_root)
    assert "SampleTable" not in (old_root / "fgvc" / "datasets" / "base.py").read_text()
    assert set(new) == {case[0] for case in fixtures}
    for key in new:
        assert new[key] == old[key], key
        assert sum(map(len, new[key]["splits"].values())) > 0, key


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
