"""`fgvc table3`: the smoke table end to end, resumption after an interrupted row, skipped rows,
and the paper's figures exactly as in the reference table."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from fgvc.cli import main
from fgvc.workflows.table3 import PAPER

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "fixres-method.md"
DATASET_OF_TITLE = {row.title: name for name, row in PAPER.items()}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_table_end_to_end(tmp_path, capsys):
    out = tmp_path / "t3"
    assert main(["table3", "--smoke", "--out", str(out)]) == 0
    rows = read_csv(out / "table3.csv")
    assert [r["dataset"] for r in rows] == [p.title for p in PAPER.values()]
    for row in rows:
        assert row["status"] == "done"
        assert row["train px"] == "32" and row["test px"] in {"40", "48", "56"}
        for column in ("baseline (ours)", "test px, no adaptation (ours)", "FixRes (ours)"):
            assert 0 <= float(row[column]) <= 100
        assert float(row["gain (ours)"]) == pytest.approx(
            float(row["FixRes (ours)"]) - float(row["baseline (ours)"]), abs=0.11)
    assert (out / "table3.md").read_text().startswith("# Table 3")
    assert (out / "table3.png").read_bytes()[:4] == b"\x89PNG"
    # Each row's data is in the dataset's own layout, and the sweep never looked at the test set.
    assert (out / "smoke-data" / "cub200" / "CUB_200_2011" / "images.txt").is_file()
    assert (out / "smoke-data" / "stanford_cars" / "devkit" / "cars_meta.mat").is_file()
    for sweep in (out / "rows").glob("*/sweep-*/recipe.yaml"):
        assert yaml.safe_load(sweep.read_text())["evaluate"]["split"] in {"holdout", "val"}
    for final in (out / "rows").glob("*/adapt-*/recipe.yaml"):
        dataset = final.parent.parent.name
        expected = "val" if dataset == "inaturalist2017" else "test"
        assert yaml.safe_load(final.read_text())["evaluate"]["split"] == expected


def test_resume_after_an_interrupted_row(tmp_path, monkeypatch, interrupt_training):
    import fgvc.workflows.pipeline as pipeline

    out = tmp_path / "t3"
    rows = ["cub200", "flowers102"]
    # cub200 trains 2 + 3 sweep + 1 final epochs; the 8th is flowers102's second train epoch.
    restore = interrupt_training(8)
    argv = ["table3", "--smoke", "--out", str(out), "--datasets", *rows]
    assert main(argv) == 130
    assert (out / "rows" / "cub200" / "result.json").is_file()
    assert not (out / "rows" / "flowers102" / "result.json").exists()
    assert (out / "rows" / "flowers102" / "train" / "checkpoints" / "train_last.pt").is_file()

    restore()
    runs = []
    real_run = pipeline.run_recipe
    monkeypatch.setattr(pipeline, "run_recipe",
                        lambda recipe, **kw: runs.append(recipe.run_dir) or real_run(recipe, **kw))
    assert main(argv) == 0
    assert all("cub200" not in str(r) for r in runs), "a finished row was recomputed"
    assert any("flowers102" in str(r) for r in runs)
    epochs = (out / "rows" / "flowers102" / "train" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 2  # the interrupted stage continued, it did not start over
    assert [r["status"] for r in read_csv(out / "table3.csv")] == ["done", "done"]

    runs.clear()
    assert main(argv) == 0
    assert runs == []  # everything done: nothing recomputed


def test_rows_without_data_are_skipped_with_the_reason(tmp_path, capsys):
    out = tmp_path / "t3"
    assert main(["table3", "--out", str(out), "--datasets", "nabirds",
                 "--root", f"nabirds={tmp_path / 'nowhere'}"]) == 0
    printed = capsys.readouterr().out
    assert "nabirds: skipped: nabirds: missing" in printed
    (row,) = read_csv(out / "table3.csv")
    assert row["status"].startswith("skipped: nabirds: missing")
    assert row["paper FixRes"] == "89.2"


def test_bad_arguments(tmp_path, capsys):
    assert main(["table3", "--out", str(tmp_path), "--datasets", "imagenet"]) == 2
    assert "unknown row(s) imagenet" in capsys.readouterr().err
    assert main(["table3", "--out", str(tmp_path), "--root", "cub=/x"]) == 2
    assert "expected DATASET=PATH" in capsys.readouterr().err


def reference_table() -> dict[str, tuple[str, float, float, float]]:
    if not REFERENCE.is_file():
        pytest.skip(f"reference table not found at {REFERENCE}")
    text = REFERENCE.read_text()
    section = text.split("## Table 3", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in DATASET_OF_TITLE:
            sota = float(re.match(r"([\d.]+)", cells[4]).group(1))
            rows[DATASET_OF_TITLE[cells[0]]] = (cells[1], float(cells[2]), float(cells[3]), sota)
    return rows


def test_paper_figures_equal_the_reference_table(tmp_path):
    reference = reference_table()
    assert set(reference) == set(PAPER)
    for name, (model, baseline, fixres, sota) in reference.items():
        paper = PAPER[name]
        assert (paper.model, paper.baseline, paper.fixres, paper.sota) == (model, baseline, fixres,
                                                                            sota)
    # And the written table carries them unchanged.
    from fgvc.workflows.table3 import RowResult, write_outputs

    write_outputs([RowResult(name, status="skipped: test") for name in PAPER], tmp_path)
    for row in read_csv(tmp_path / "table3.csv"):
        model, baseline, fixres, sota = reference[DATASET_OF_TITLE[row["dataset"]]]
        assert float(row["paper baseline"]) == baseline
        assert float(row["paper FixRes"]) == fixres
        assert float(row["best published then"].split()[0]) == sota
