"""`fgvc datasets list | info | export | verify` and the dataset cards."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fgvc.cli import main
from fgvc.datasets.cards import CARDS, render_card
from fgvc.datasets.layouts import write_cub200, write_nabirds
from fgvc.datasets.registry import names

REPO = Path(__file__).resolve().parents[1]


def test_every_adapter_has_a_committed_card_in_step_with_the_code():
    assert set(CARDS) == set(names())
    for name in CARDS:
        path = REPO / "datasets" / f"{name}.md"
        assert path.is_file(), f"missing card {path}"
        assert path.read_text() == render_card(name), f"{path} is stale: python -m fgvc.datasets.cards"


def test_list_json(capsys):
    assert main(["datasets", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cub200"]["classes"] == 200
    assert rows["cub200"]["splits"] == {"train": 5994, "test": 5794}
    assert rows["nabirds"]["classes"] == 555


def test_info_json(tmp_path, capsys):
    write_nabirds(tmp_path)
    (tmp_path / "nabirds" / "images" / "0295").rename(tmp_path / "gone")
    assert main(["datasets", "info", "nabirds", "--root", str(tmp_path), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["num_classes"] == 4
    assert found["splits"] == {"train": 12, "test": 12}
    assert found["missing_files"] == {"train": 3, "test": 3}
    assert found["classes"][0] == {"label": 0, "category_id": "295", "name": "Leaf Bird 295"}


def test_export_to_stdout_and_file(tmp_path, capsys):
    write_cub200(tmp_path)
    assert main(["datasets", "export", "cub200", "--root", str(tmp_path), "--split", "test"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 12
    assert list(rows[0]) == ["id", "path", "label", "category_id"]
    assert all((tmp_path / "CUB_200_2011" / r["path"]).is_file() for r in rows)
    assert all(int(r["category_id"]) == int(r["label"]) + 1 for r in rows)
    out = tmp_path / "train.csv"
    assert main(["datasets", "export", "cub200", "--root", str(tmp_path), "--split", "train",
                 "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 13


def test_export_unknown_split_is_a_clean_error(tmp_path, capsys):
    write_cub200(tmp_path)
    assert main(["datasets", "export", "cub200", "--root", str(tmp_path), "--split", "val"]) == 2
    assert "has no split 'val' (it has: train, test)" in capsys.readouterr().err


def test_verify_clean_tree(tmp_path, capsys):
    write_cub200(tmp_path)
    assert main(["datasets", "verify", "cub200", "--root", str(tmp_path)]) == 0
    assert "24 image(s) checked, 0 missing, 0 unreadable" in capsys.readouterr().out
