"""Running again is safe: numbered run folders and submissions, no overwrite by a concurrent run,
a finished run left alone by `resume`, `fgvc report`, and `resume --set --allow-changes`; and
the run folder's own type (fgvc/runfolder.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from fgvc.cli import main
from fgvc.runfolder import NotARunFolderError, RunFolder, RunNotFinishedError


def write_recipe(tmp_path, data) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def quick(recipe: dict, tmp_path) -> dict:
    """One epoch per stage; the submission named after the run folder (no explicit path)."""
    recipe["stages"][0]["epochs"] = 1
    recipe["evaluate"]["resolutions"] = [32, 48]
    recipe["submission"] = {"format": "generic"}
    return recipe


def test_second_run_gets_its_own_folder_and_submission(tiny_recipe_dict, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the derived submission path is relative: submissions/<run>.csv
    recipe = write_recipe(tmp_path, quick(tiny_recipe_dict, tmp_path))
    assert main(["run", recipe]) == 0
    first = (tmp_path / "submissions" / "tiny.csv").read_text()
    assert main(["run", recipe]) == 0
    assert (tmp_path / "runs" / "tiny-2" / "report.md").is_file()
    assert (tmp_path / "submissions" / "tiny-2.csv").is_file()
    assert (tmp_path / "submissions" / "tiny.csv").read_text() == first
    summary = RunFolder(tmp_path / "runs" / "tiny-2").read_summary()
    assert summary["submission"] == "submissions/tiny-2.csv"

    # A run folder removed by hand leaves its submission: its number is not reused.
    shutil.rmtree(tmp_path / "runs")
    assert main(["run", recipe]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny-3"]
    assert (tmp_path / "submissions" / "tiny.csv").read_text() == first


def test_resume_of_a_finished_run_does_nothing(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "finished"
    shutil.copytree(finished_run, run_dir)
    watched = [run_dir / "summary.json", run_dir / "report.md", run_dir / "predictions" / "probs.npy"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    assert main(["resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{run_dir} is finished: nothing to do" in out
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_report_rebuilds_the_report_from_the_saved_run(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "finished"
    shutil.copytree(finished_run, run_dir)
    original = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    (run_dir / "accuracy_vs_resolution.png").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "report rebuilt" in capsys.readouterr().out
    assert (run_dir / "accuracy_vs_resolution.png").is_file()
    rebuilt = (run_dir / "report.md").read_text()
    # The same sections with the same figures; only the run folder's own path may differ.
    assert rebuilt.replace(str(run_dir), str(finished_run)) == original


def test_report_of_an_unfinished_run_says_so(tmp_path, finished_run, capsys):
    run_dir = tmp_path / "half"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "summary.json").unlink()
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "has not finished" in err and len(err.splitlines()) == 1


def test_resume_with_a_named_change(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "finished"
    shutil.copytree(finished_run, run_dir)
    train_weights = (run_dir / "checkpoints" / "train.pt").read_bytes()

    assert main(["resume", str(run_dir), "--set", "predict.crops=center_flip"]) == 2
    err = capsys.readouterr().err
    assert "predict.crops" in err and "--allow-changes predict.crops" in err

    assert main(["resume", str(run_dir), "--set", "predict.crops=center_flip",
                 "--allow-changes", "predict.crops"]) == 0
    assert RunFolder(run_dir).read_recipe().predict.crops == "center_flip"
    change = json.loads((run_dir / "recipe_changes.jsonl").read_text().splitlines()[-1])
    assert change["changes"] == {"predict.crops": {"run": "center", "now": "center_flip"}}
    from fgvc.inference.predictions import Predictions

    assert Predictions.load(run_dir / "predictions").meta["crops"] == "center_flip"
    assert (run_dir / "checkpoints" / "train.pt").read_bytes() == train_weights  # not retrained


def test_a_submission_written_meanwhile_is_never_overwritten(tmp_path, monkeypatch):
    import fgvc.inference.submission as submission
    from fgvc.inference.predictions import Predictions

    preds = Predictions(ids=["a", "b"], class_ids=["1", "2"],
                        probs=np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32))
    target = tmp_path / "sub.csv"
    # The other run writes its file after this one checked the path was free.
    real_check = submission.check_writable

    def check_then_lose_the_race(path, force):
        real_check(path, force)
        path.write_text("the other run's\n")

    monkeypatch.setattr(submission, "check_writable", check_then_lose_the_race)
    with pytest.raises(submission.SubmissionError, match="written by another process meanwhile"):
        submission.write_submission(preds, target)
    assert target.read_text() == "the other run's\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temporary file left


def test_run_folder_type(tmp_path, finished_run):
    with pytest.raises(NotARunFolderError, match="no such run folder"):
        RunFolder.open(tmp_path / "nowhere")
    with pytest.raises(NotARunFolderError, match="is not a fgvc run folder"):
        RunFolder.open(tmp_path)
    folder = RunFolder.open(finished_run)
    recipe = folder.read_recipe()
    assert folder.final_weights(recipe) == finished_run / "checkpoints" / "adapt.pt"
    assert folder.checkpoint("train", "last") == finished_run / "checkpoints" / "train_last.pt"
    assert folder.finished and folder.read_evaluation()["after_adaptation"]
    assert [r["stage"] for r in folder.metric_rows()] == ["train", "train", "adapt"]

    half = tmp_path / "half"
    shutil.copytree(finished_run, half)
    (half / "checkpoints" / "adapt.pt").unlink()
    with pytest.raises(RunNotFinishedError, match="has not finished its last stage"):
        RunFolder(half).final_weights()
    (half / "metrics.jsonl").write_text('{"stage": "train"}\n{torn\n')
    from fgvc.io.atomic import RunFileError

    with pytest.raises(RunFileError, match="line 2 is corrupt"):
        RunFolder(half).metric_rows()


def test_resume_with_changed_evaluation_or_finished_stage(finished_run, tmp_path, caplog):
    run_dir = tmp_path / "finished"
    shutil.copytree(finished_run, run_dir)
    assert main(["resume", str(run_dir), "--set", "evaluate.resolutions=[40]",
                 "--set", "stages.train.epochs=3",
                 "--allow-changes", "evaluate.resolutions", "stages.train.epochs"]) == 0
    evaluation = RunFolder(run_dir).read_evaluation()
    assert list(evaluation["after_adaptation"]) == ["40"]  # computed again, not the stored 32/40
    assert list(evaluation["before_adaptation"]) == ["40"]
    assert "stages.train.epochs: stage 'train' is finished" in caplog.text
    assert [r["stage"] for r in RunFolder(run_dir).metric_rows()] == ["train", "train", "adapt"]
