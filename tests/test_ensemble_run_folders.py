"""`fgvc ensemble` takes run folders (their predictions/) beside predictions directories."""

from __future__ import annotations

import numpy as np
import pytest

from fgvc.cli import main
from fgvc.errors import EnsembleError
from fgvc.inference.ensemble import load_members
from fgvc.inference.predictions import Predictions
from fgvc.runfolder import RunFolder


def finished_run(path, probs):
    """A run folder as a finished run leaves it, as far as ensembling reads it."""
    path.mkdir()
    (path / RunFolder.RECIPE).write_text("name: tiny\n")
    Predictions(["x", "y"], ["10", "20", "30"], np.asarray(probs, dtype=np.float16),
                {"model": path.name}).save(RunFolder(path).predictions_dir)
    return path


def test_ensemble_of_run_folders_and_a_predictions_directory(tmp_path, capsys):
    a = finished_run(tmp_path / "run_a", [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    b = finished_run(tmp_path / "run_b", [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    loose = Predictions(["y", "x"], ["10", "20", "30"],
                        np.asarray([[1, 0, 0], [0, 0, 1]], dtype=np.float16)).save(tmp_path / "p")
    out = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), str(loose), "--out", str(out)]) == 0
    assert "3 prediction file(s) combined over 2 images" in capsys.readouterr().out
    combined = Predictions.load(out)
    assert combined.ids == ["x", "y"]
    expected = np.array([[0.6, 1.3, 1.1], [1.2, 0.2, 1.6]]) / 3
    np.testing.assert_allclose(combined.probs.astype(float), expected, atol=2e-3)
    assert [m["name"] for m in combined.meta["ensemble"]] == [str(a), str(b), str(loose)]
    assert [m["model"] for m in combined.meta["ensemble"][:2]] == ["run_a", "run_b"]


def test_run_folder_without_predictions_is_one_clear_line(tmp_path, capsys):
    a = finished_run(tmp_path / "run_a", [[1, 0, 0], [0, 1, 0]])
    bare = tmp_path / "run_b"
    bare.mkdir()
    (bare / RunFolder.RECIPE).write_text("name: tiny\n")
    with pytest.raises(EnsembleError, match=r"run_b is a run folder without predictions \(no "
                                            r"predictions/\): run `fgvc predict .*run_b` first"):
        load_members([a, bare])
    assert main(["ensemble", str(a), str(bare), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run folder without predictions" in err
    assert not (tmp_path / "ens").exists()


def test_a_folder_that_is_neither_is_refused_as_before(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["ensemble", str(tmp_path / "empty"), "--out", str(tmp_path / "ens")]) == 2
    assert "not a predictions directory" in capsys.readouterr().err
