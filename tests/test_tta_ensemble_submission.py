"""Test-time augmentation, ensembling, competition writers and `fgvc submit`."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from fgvc.cli import main
from fgvc.inference.ensemble import EnsembleError, combine
from fgvc.inference.predictions import Predictions
from fgvc.inference.submission import FORMATS, SubmissionError, validate_csv, write_submission
from fgvc.inference.tta import MultiCrop, combine_crops
from fgvc.transforms import DataConfig, build_transform, resize_size

CFG = DataConfig()


def image(width=90, height=70, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(90, 70), (61, 97), (64, 64)])
def test_ten_crop_equals_torchvision(size):
    img = image(*size)
    ours = MultiCrop(48, CFG, "ten_crop")(img)
    reference = T.Compose([
        T.Resize(resize_size(48, CFG.crop_pct)), T.TenCrop(48),
        T.Lambda(lambda crops: torch.stack([T.Normalize(CFG.mean, CFG.std)(T.ToTensor()(c))
                                            for c in crops])),
    ])(img)
    assert ours.shape == (10, 3, 48, 48)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_centre_crop_is_test_da_and_flip_mirrors_it():
    img = image()
    centre = MultiCrop(32, CFG, "center")(img)
    assert torch.allclose(centre[0], build_transform("test", 32, CFG)(img), atol=1e-6)
    pair = MultiCrop(32, CFG, "center_flip")(img)
    assert torch.equal(pair[0], centre[0]) and torch.equal(pair[1], centre[0].flip(-1))


def test_crop_averaging_arithmetic():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])  # one image, two crops, two classes
    p1, p2 = logits[0].softmax(-1)
    assert torch.allclose(combine_crops(logits, "probs"), ((p1 + p2) / 2)[None])
    assert torch.allclose(combine_crops(logits, "logits"), torch.tensor([[1.0, 2.0]]).softmax(-1))


def preds(ids, probs, classes=("10", "20", "30")) -> Predictions:
    return Predictions(list(ids), list(classes), np.asarray(probs, dtype=np.float16),
                       {"model": "m"})


def test_weighted_ensemble_aligns_ids():
    a = preds(["x", "y"], [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    b = preds(["y", "x"], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # other row order
    out = combine([("a", a), ("b", b)], weights=[3, 1])
    expected = np.array([[0.45, 0.225, 0.325], [0.15, 0.4, 0.45]])
    assert out.ids == ["x", "y"]
    np.testing.assert_allclose(out.probs.astype(np.float64), expected, atol=2e-3)
    assert [m["weight"] for m in out.meta["ensemble"]] == [3, 1]
    geometric = combine([("a", a), ("a2", a)], how="log_probs")
    np.testing.assert_allclose(geometric.probs.astype(np.float64), a.probs.astype(np.float64),
                               atol=2e-3)


def test_ensemble_refusals_name_the_members():
    a = preds(["x", "y"], [[1, 0, 0], [0, 1, 0]])
    with pytest.raises(EnsembleError, match=r"b and a cover different images: 1 only in b "
                                            r"\(e\.g\. \['z'\]\), 1 only in a \(e\.g\. \['y'\]\)"):
        combine([("a", a), ("b", preds(["x", "z"], [[1, 0, 0], [0, 1, 0]]))])
    with pytest.raises(EnsembleError, match="c and a order their classes differently"):
        combine([("a", a), ("c", preds(["x", "y"], [[1, 0, 0], [0, 1, 0]], ("20", "10", "30")))])
    with pytest.raises(EnsembleError, match="d and a predict different classes"):
        combine([("a", a), ("d", preds(["x", "y"], [[1, 0], [0, 1]], ("10", "20")))])
    with pytest.raises(EnsembleError, match="weights"):
        combine([("a", a)], weights=[1, 2])


@pytest.mark.parametrize("fmt,header,count", [
    ("generic", ["id", "predicted"], 1), ("inaturalist2017", ["id", "predicted"], 5),
    ("inaturalist2018", ["id", "predicted"], 3), ("inaturalist2019", ["id", "predicted"], 1),
    ("herbarium2019", ["Id", "Category"], 1),
])
def test_writers(tmp_path, fmt, header, count):
    classes = [str(c) for c in range(100, 106)]
    probs = np.eye(6)[[5, 0, 2]] * 0.5 + np.linspace(0.01, 0.06, 6)[None]
    p = Predictions(["00001.jpg", "00002.jpg", "00003.jpg"], classes, probs.astype(np.float16))
    path = write_submission(p, tmp_path / "s.csv", fmt)
    rows = list(csv.reader(path.open()))
    assert rows[0] == header
    assert [r[0] for r in rows[1:]] == p.ids
    firsts = [r[1].split()[0] for r in rows[1:]]
    assert firsts == ["105", "100", "102"]  # best first, the dataset's own ids
    assert all(len(r[1].split()) == count for r in rows[1:])
    if count > 1:  # then by decreasing probability
        assert rows[1][1].split()[1] == "104"
    with pytest.raises(SubmissionError, match="exists; pass --force"):
        write_submission(p, path, fmt)
    write_submission(p, path, fmt, force=True)


def test_submission_must_cover_every_test_id(tmp_path):
    p = preds(["a", "b"], [[1, 0, 0], [0, 1, 0]])
    with pytest.raises(SubmissionError, match=r"1 test id\(s\) missing, e\.g\. \['c'\]"):
        write_submission(p, tmp_path / "s.csv", expected_ids=["a", "b", "c"])
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.csv.tmp").exists()


@pytest.mark.parametrize("body,message", [
    ("id,predicted\na,10\na,20\n", "id 'a' appears twice"),
    ("id,predicted\nq,10\n", "unknown id 'q'"),
    ("id,predicted\na,99\n", "expected 1 known category id"),
    ("Id,Category\na,10\n", "header"),
])
def test_validation_catches_broken_files(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(SubmissionError, match=message):
        validate_csv(path, "generic", ["a"], ["10", "20"])


def test_fgvc_ensemble_command(tmp_path, capsys):
    a = preds(["x", "y"], [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    b = preds(["x", "y"], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    out, sub = tmp_path / "ens", tmp_path / "ens.csv"
    assert main(["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--weights", "1",
                 "3", "--out", str(out), "--submission", str(sub), "--format", "inaturalist2017"]) == 0
    combined = Predictions.load(out)
    np.testing.assert_allclose(combined.probs[0].astype(float), [0.15, 0.825, 0.025], atol=2e-3)
    assert list(csv.reader(sub.open()))[1] == ["x", "20 10 30"]
    c = preds(["x", "z"], [[1, 0, 0], [0, 1, 0]])
    c.save(tmp_path / "c")
    assert main(["ensemble", str(tmp_path / "a"), str(tmp_path / "c"), "--out",
                 str(tmp_path / "bad")]) == 2
    assert "cover different images" in capsys.readouterr().err


# ---- fgvc submit, with a stand-in kaggle package ----

FAKE_KAGGLE = '''
import json, os
class _Api:
    def competition_submit(self, file_name, message, competition, quiet=False):
        if os.environ.get("FAKE_KAGGLE_FAIL"):
            raise RuntimeError("401 Unauthorized for key " + os.environ.get("KAGGLE_KEY", ""))
        with open(os.environ["FAKE_KAGGLE_LOG"], "w") as f:
            json.dump({"file_name": file_name, "message": message, "competition": competition}, f)
if not os.environ.get("KAGGLE_USERNAME"):
    print("Could not find kaggle.json. Make sure it's located in ~/.kaggle.")
    exit(1)
api = _Api()
'''


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    package = tmp_path / "fake_site" / "kaggle"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_KAGGLE)
    monkeypatch.syspath_prepend(str(tmp_path / "fake_site"))
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(tmp_path / "calls.json"))
    sub = tmp_path / "sub.csv"
    sub.write_text("id,predicted\n1,5\n")
    return sub


def test_submit_calls_the_api(fake_kaggle, tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t")
    assert main(["submit", str(fake_kaggle), "--competition", "inaturalist-2019-fgvc6",
                 "-m", "senet154 10-crop"]) == 0
    call = json.loads((tmp_path / "calls.json").read_text())
    assert call == {"file_name": str(fake_kaggle), "message": "senet154 10-crop",
                    "competition": "inaturalist-2019-fgvc6"}
    assert "s3cr3t" not in capsys.readouterr().out


def test_submit_without_credentials_is_a_clean_error(fake_kaggle, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    assert main(["submit", str(fake_kaggle), "--competition", "inaturalist-2019-fgvc6",
                 "-m", "x"]) == 2
    err = capsys.readouterr().err
    assert "Kaggle credentials not found" in err and "KAGGLE_USERNAME" in err


def test_submit_failure_never_shows_the_key(fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t")
    monkeypatch.setenv("FAKE_KAGGLE_FAIL", "1")
    assert main(["submit", str(fake_kaggle), "--competition", "inaturalist-2019-fgvc6",
                 "-m", "x"]) == 2
    captured = capsys.readouterr()
    assert "Kaggle refused or could not be reached" in captured.err
    assert "s3cr3t" not in captured.err + captured.out


def test_submit_checks_the_competitions_header(fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    assert main(["submit", str(fake_kaggle), "--competition", "herbarium-2019-fgvc6",
                 "-m", "x"]) == 2
    assert "is not herbarium2019's ['Id', 'Category']" in capsys.readouterr().err


def test_every_format_names_its_competition():
    assert {f.competition for f in FORMATS.values()} >= {"inaturalist-2019-fgvc6",
                                                          "herbarium-2019-fgvc6"}
