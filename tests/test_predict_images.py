"""``fgvc predict RUN --images ...`` and ``fgvc.predict`` on the images a user has: files,
folders, globs, odd formats and a corrupt file; the CSV of class names and scores; the run's
headline top-1 in summary.json. All on the session's tiny finished run (tests/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fgvc
from fgvc.cli import main

NAMES_IN_FOLDER = ["UPPER.JPG", "a.jpg", "b.png", "bad.jpg", "c.webp", "sub/gray.png",
                   "sub/rgba.png"]


@pytest.fixture(scope="module")
def photos(tiny_data_root, tmp_path_factory) -> Path:
    """Seven image files of five kinds (one corrupt), plus files that are not images."""
    folder = tmp_path_factory.mktemp("user") / "photos"
    (folder / "sub" / ".cache").mkdir(parents=True)
    sources = sorted((tiny_data_root / "images" / "test").glob("*.jpg"))
    rgb = [Image.open(p).convert("RGB") for p in sources[:5]]
    rgb[0].save(folder / "a.jpg")
    rgb[1].save(folder / "b.png")
    rgb[2].save(folder / "c.webp")
    rgb[3].save(folder / "UPPER.JPG")
    rgb[4].convert("L").save(folder / "sub" / "gray.png")
    rgba = rgb[0].convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "sub" / "rgba.png")
    (folder / "bad.jpg").write_bytes(b"this is not a JPEG")
    (folder / "notes.txt").write_text("not an image")
    rgb[0].save(folder / ".hidden.jpg")
    rgb[0].save(folder / "sub" / ".cache" / "thumb.jpg")
    return folder


def class_names(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "summary.json").read_text())["class_names"]


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def check_rows(rows: list[list[str]], k: int, names: list[str]) -> None:
    """Each row: a path, then k (name, score) pairs, distinct names, scores best first."""
    for row in rows:
        assert len(row) == 1 + 2 * k
        labels, scores = row[1::2], [float(s) for s in row[2::2]]
        assert set(labels) <= set(names) and len(set(labels)) == k
        assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1


def test_a_folder_gives_names_and_scores_and_skips_the_corrupt_file(finished_run, photos,
                                                                    tmp_path, caplog, capsys):
    out = tmp_path / "preds.csv"
    with caplog.at_level(logging.WARNING):
        status = main(["predict", str(finished_run), "--images", str(photos), "--top-k", "3",
                       "--out", str(out)])
    assert status == 0
    rows = read_csv(out.read_text())
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]
    expected = [str(photos / n) for n in NAMES_IN_FOLDER if n != "bad.jpg"]
    assert [r[0] for r in rows[1:]] == expected  # sorted, recursive, hidden files left out
    check_rows(rows[1:], 3, class_names(finished_run))
    message = f"skipped 1 of 7 images that could not be read: {photos / 'bad.jpg'} " \
              "(cannot identify image file)"
    assert message in caplog.text and "Traceback" not in caplog.text
    assert f"6 of 7 images predicted (center at 40 px), top-3 class names -> {out}" \
        in capsys.readouterr().out
    # The same numbers as the API, which names the same best class.
    preds = fgvc.predict(finished_run, [photos / "a.jpg"])
    assert rows[2][1] == preds.top_k(1, names=True)[0][0]
    assert float(rows[2][2]) == pytest.approx(float(preds.probs.max()), abs=1e-5)


def test_a_glob_to_standard_output_with_more_k_than_classes(finished_run, photos, capsys):
    status = main(["predict", str(finished_run), "--images", str(photos / "**" / "*.png"),
                   "--top-k", "10", "--out", "-"])
    captured = capsys.readouterr()
    assert status == 0
    rows = read_csv(captured.out)
    assert rows[0] == ["path"] + [f"{c}_{i}" for i in range(1, 5) for c in ("label", "score")]
    assert [r[0] for r in rows[1:]] == [str(photos / n) for n in
                                        ("b.png", "sub/gray.png", "sub/rgba.png")]
    check_rows(rows[1:], 4, class_names(finished_run))
    assert sorted(rows[1][1::2]) == sorted(class_names(finished_run))  # every class, once
    assert "--top-k 10: the run has 4 classes; each row lists all 4" in captured.err
    assert "3 of 3 images predicted" in captured.err  # stdout holds the CSV alone


def test_a_single_file_and_the_default_output_in_the_run_folder(finished_run, photos,
                                                                tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")  # the shared run stays as it was
    assert main(["predict", str(run), "--images", str(photos / "c.webp")]) == 0
    rows = read_csv((run / "predictions-images.csv").read_text())
    assert rows[0][:3] == ["path", "label_1", "score_1"] and len(rows[0]) == 9
    assert [r[0] for r in rows[1:]] == [str(photos / "c.webp")]
    check_rows(rows[1:], 4, class_names(finished_run))  # k = 5 clamped to the 4 classes
    assert "note:" not in capsys.readouterr().err  # the default k is clamped without a word


@pytest.mark.parametrize("images, expected", [
    ("empty", "empty: no image files in this folder or below"),
    ("missing.jpg", "missing.jpg: no such file or folder"),
    ("*.tif", "*.tif: the pattern matches no image file"),
])
def test_no_image_is_one_clear_line(finished_run, tmp_path, capsys, monkeypatch, images,
                                    expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    assert main(["predict", str(finished_run), "--images", images, "--out", "p.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1
    assert not (tmp_path / "p.csv").exists()


def test_only_unreadable_files_is_an_error_naming_them(finished_run, photos, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["predict", str(finished_run), "--images", str(photos / "bad.jpg"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: none of the 1 image(s) could be read: {photos / 'bad.jpg'} "
                   "(cannot identify image file)\n")
    assert not out.exists()


def test_an_existing_output_is_kept_unless_forced(finished_run, photos, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    out.write_text("keep me\n")
    args = ["predict", str(finished_run), "--images", str(photos / "a.jpg"), "--out", str(out)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: --out {out}: exists; pass --force to overwrite it\n"
    assert out.read_text() == "keep me\n"
    assert main(args + ["--force"]) == 0
    assert read_csv(out.read_text())[1][0] == str(photos / "a.jpg")


def test_images_refuse_split_only_options(finished_run, photos, capsys):
    assert main(["predict", str(finished_run), "--images", str(photos), "--split", "val"]) == 2
    assert "--images: cannot be combined with --split" in capsys.readouterr().err
    assert main(["predict", str(finished_run), "--top-k", "3"]) == 2
    assert "--top-k: applies to --images" in capsys.readouterr().err


def test_api_predict_a_folder_gives_class_names_and_scores(finished_run, photos, caplog):
    run = fgvc.load_run(finished_run)
    assert run.class_names == class_names(finished_run)
    assert run.class_names != run.class_ids and len(run.class_names) == 4
    with caplog.at_level(logging.WARNING):
        preds = fgvc.predict(run, str(photos))
    assert "skipped 1 of 7 images" in caplog.text
    assert preds.ids == [str(photos / n) for n in NAMES_IN_FOLDER if n != "bad.jpg"]
    assert preds.meta["unreadable"] == [{"path": str(photos / "bad.jpg"),
                                         "reason": "cannot identify image file"}]
    top = preds.top_k(2, scores=True, names=True)
    assert len(top) == 6 and all(len(row) == 2 for row in top)
    for row, probs in zip(top, preds.probs, strict=True):
        assert row[0][0] in run.class_names and row[0][1] >= row[1][1]
        assert row[0][1] == pytest.approx(float(probs.max()), abs=1e-3)  # scores as float16
    # Decoding in loader workers gives the same rows.
    parallel = fgvc.predict(run, str(photos), num_workers=2, batch_size=2)
    assert parallel.ids == preds.ids
    np.testing.assert_allclose(parallel.probs, preds.probs, atol=1e-6)
    # The ids (a submission's labels) stay the default; a glob gives the same rows.
    assert preds.top_k(1)[0][0] in run.class_ids
    by_glob = fgvc.predict(run, str(photos / "*.jpg"))
    assert by_glob.ids == [str(photos / "a.jpg")]  # bad.jpg left out, UPPER.JPG: case-sensitive glob
    with pytest.raises(ValueError, match="images\\[0\\]: expected an image file"):
        fgvc.predict(run, [42])


def test_top_k_with_scores_and_names():
    from fgvc.inference.predictions import Predictions, PredictionsError

    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32)
    preds = Predictions(["x", "y"], ["7", "8", "9"], probs, class_names=["ant", "bee", "cat"])
    assert preds.top_k(2) == [["8", "9"], ["7", "9"]]
    assert preds.top_k(2, names=True) == [["bee", "cat"], ["ant", "cat"]]
    pairs = preds.top_k(5, scores=True, names=True)
    assert [[n for n, _ in row] for row in pairs] == [["bee", "cat", "ant"], ["ant", "cat", "bee"]]
    assert [s for _, s in pairs[0]] == pytest.approx([0.6, 0.3, 0.1], abs=1e-3)
    assert preds.keep_top_k(1).top_k(1, names=True) == [["bee"], ["ant"]]
    unnamed = Predictions(["x", "y"], ["7", "8", "9"], probs)
    assert unnamed.top_k(1, scores=True) == [[("8", pytest.approx(0.6, abs=1e-3))],
                                             [("7", pytest.approx(0.5, abs=1e-3))]]
    with pytest.raises(PredictionsError, match="carries no class names"):
        unnamed.top_k(1, names=True)


def test_runs_without_saved_names_fall_back_to_category_ids():
    from fgvc.api import saved_class_names

    ids = ["100", "101"]
    assert saved_class_names({}, ids) == ids  # a run written before names were saved
    assert saved_class_names({"class_names": ["a", "b"], "category_ids": ids}, ids) == ["a", "b"]
    assert saved_class_names({"class_names": ["a", "b"], "category_ids": ["1", "2"]}, ids) == ids


def test_summary_carries_the_final_top1_with_its_interval(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    entry = json.loads((finished_run / "evaluation.json").read_text())["after_adaptation"]["40"]
    top1 = summary["top1"]
    assert top1["resolution"] == 40 and top1["split"] == "val"
    assert top1["phase"] == "after_adaptation" and top1["images"] == entry["images"] == 12
    assert top1["value"] == pytest.approx(entry["top1"], abs=1e-3)
    low, high = top1["ci95"]
    assert 0 <= low <= top1["value"] <= high <= 100 and high - low > 10  # 12 images: wide
    assert summary["category_ids"] == ["100", "101", "102", "103"]
