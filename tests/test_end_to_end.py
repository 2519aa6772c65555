"""A whole two-stage run of a tiny recipe through the CLI, its every output, and resumption."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from fgvc.cli import main
from fgvc.datasets.synthetic import read_test_labels
from fgvc.inference.predictions import Predictions

OUTPUTS = ["recipe.yaml", "metrics.jsonl", "evaluation.json", "predictions/probs.npy", "report.md",
           "accuracy_vs_resolution.png", "summary.json", "log.txt", "checkpoints/train.pt",
           "checkpoints/adapt.pt"]


def write_recipe(tmp_path, data) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_run_writes_every_output(tiny_recipe_dict, tiny_data_root, tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    for name in OUTPUTS:
        assert (run_dir / name).is_file(), f"missing {name}"
    assert not (run_dir / "checkpoints" / "train_last.pt").exists()

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("train", 1), ("train", 2), ("adapt", 1)]
    assert all(0 <= r["val_top1"] <= 100 and r["bad_images"] == 0 for r in rows)

    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert set(evaluation) == {"before_adaptation", "after_adaptation"}
    for phase in evaluation.values():
        assert set(phase) == {"32", "48"}
        assert all(m["top1"] <= m["top5"] for m in phase.values())

    report = (run_dir / "report.md").read_text()
    assert "| 32 (train) |" in report and "| 48 (adapt) |" in report
    assert "top-1 after adaptation" in report
    assert (run_dir / "accuracy_vs_resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Predictions: every test image once, probabilities that sum to one, the dataset's ids.
    labels = read_test_labels(tiny_data_root)
    preds = Predictions.load(run_dir / "predictions")
    assert sorted(preds.ids) == sorted(labels)
    assert preds.probs.dtype == np.float16
    assert np.allclose(preds.probs.astype(np.float32).sum(1), 1, atol=1e-2)
    assert preds.class_ids == ["100", "101", "102", "103"]
    assert preds.meta["resolutions"] == [48] and preds.meta["crops"] == "center"

    # Submission: header, one row per test image, the argmax's category id.
    with open(tmp_path / "submissions" / "tiny.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["id", "predicted"]
    assert sorted(r[0] for r in table[1:]) == sorted(labels)
    best = dict(zip(preds.ids, (c[0] for c in preds.top_k(1)), strict=True))
    assert all(r[1] == best[r[0]] for r in table[1:])
    assert "done:" in capsys.readouterr().out


def test_rerun_keeps_earlier_work(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["stages"] = tiny_recipe_dict["stages"][:1]
    tiny_recipe_dict["stages"][0]["epochs"] = 1
    tiny_recipe_dict["submission"] = None
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 0
    assert main(["run", recipe]) == 0
    assert (tmp_path / "runs" / "tiny" / "report.md").is_file()
    assert (tmp_path / "runs" / "tiny-2" / "report.md").is_file()


def test_existing_submission_is_not_overwritten(tiny_recipe_dict, tmp_path, capsys):
    target = tmp_path / "submissions" / "tiny.csv"
    target.parent.mkdir(parents=True)
    target.write_text("precious\n")
    assert main(["run", write_recipe(tmp_path, tiny_recipe_dict)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert target.read_text() == "precious\n"
    assert not (tmp_path / "runs" / "tiny").exists()


def test_resume_continues_after_a_crash(tiny_recipe_dict, tmp_path, interrupt_training):
    restore = interrupt_training(2)
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 130
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "checkpoints" / "train_last.pt").is_file()
    restore()
    # As if the crash had come after epoch 2 was logged but before its checkpoint was saved.
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"stage": "train", "epoch": 2, "val_top1": -1}) + "\n")

    assert main(["run", recipe, "--resume"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("train", 1), ("train", 2), ("adapt", 1)]
    assert all(r["val_top1"] >= 0 for r in rows)
    assert (run_dir / "report.md").is_file()
    assert not (tmp_path / "runs" / "tiny-2").exists()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_recipe_dict, tmp_path,
                                                                interrupt_training):
    import torch

    tiny_recipe_dict["stages"] = tiny_recipe_dict["stages"][:1]
    tiny_recipe_dict["predict"] = tiny_recipe_dict["submission"] = None
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 0

    restore = interrupt_training(2)
    assert main(["run", recipe]) == 130
    restore()
    assert main(["run", recipe, "--resume"]) == 0
    straight = torch.load(tmp_path / "runs/tiny/checkpoints/train.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "runs/tiny-2/checkpoints/train.pt", weights_only=True)["model"]
    for key, value in straight.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-5), key


def test_validate_prints_the_plan(tiny_recipe_dict, tmp_path, capsys):
    assert main(["validate", write_recipe(tmp_path, tiny_recipe_dict)]) == 0
    out = capsys.readouterr().out
    assert "1. train: 2 epoch(s) at 32 px" in out
    assert "2. adapt: 1 epoch(s) at 48 px" in out
    assert "classifier -> fc" in out and "last_bn -> layer4.0.bn2, layer4.0.downsample.2" in out
    assert "submission (generic) -> " in out
    assert not (tmp_path / "runs").exists()


def test_validate_reports_errors_cleanly(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["stages"][1]["resolution"] = 16
    assert main(["validate", write_recipe(tmp_path, tiny_recipe_dict),
                 "--set", "model.arch=nonexistent_net"]) == 2
    err = capsys.readouterr().err
    assert "stages[1].resolution" in err and "model.arch: unknown model 'nonexistent_net'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("policy,expected", [("skip", 0), ("fail", 2)])
def test_bad_images_are_skipped_and_counted_or_fail(tiny_recipe_dict, tiny_data_root, tmp_path,
                                                    policy, expected, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    train_csv = list(csv.DictReader((root / "train.csv").open()))
    (root / train_csv[0]["path"]).write_bytes(b"not a jpeg")
    tiny_recipe_dict["dataset"].update(root=str(root), on_bad_image=policy)
    tiny_recipe_dict["stages"] = tiny_recipe_dict["stages"][:1]
    tiny_recipe_dict["stages"][0]["epochs"] = 1
    assert main(["run", write_recipe(tmp_path, tiny_recipe_dict)]) == expected
    if policy == "skip":
        rows = (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()
        assert json.loads(rows[0])["bad_images"] == 1
    else:
        assert "cannot read image" in capsys.readouterr().err


def test_missing_data_is_a_clean_error_that_leaves_nothing_behind(tiny_recipe_dict, tmp_path,
                                                                  capsys):
    tiny_recipe_dict["dataset"] = {"name": "cub200", "root": str(tmp_path / "no_cub")}
    assert main(["run", write_recipe(tmp_path, tiny_recipe_dict)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "images.txt" in err and "fgvc datasets card cub200" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_predict_again_with_other_crops(tiny_recipe_dict, tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    # Same settings as the run: the same probabilities.
    assert main(["predict", str(run_dir), "--out", str(tmp_path / "again")]) == 0
    original, again = (Predictions.load(p) for p in (run_dir / "predictions",
                                                     tmp_path / "again"))
    assert again.ids == original.ids
    np.testing.assert_allclose(again.probs.astype(np.float32), original.probs.astype(np.float32),
                               atol=2e-3)
    # 10 crops at two resolutions, with a submission.
    csv_path = tmp_path / "ten.csv"
    assert main(["predict", str(run_dir), "--crops", "ten_crop", "--resolutions", "32", "48",
                 "--submission", str(csv_path)]) == 0
    ten = Predictions.load(run_dir / "predictions-test-ten_crop-32-48")
    assert ten.meta["crops"] == "ten_crop" and ten.meta["resolutions"] == [32, 48]
    assert not np.allclose(ten.probs.astype(np.float32), original.probs.astype(np.float32))
    assert len(csv_path.read_text().splitlines()) == len(original.ids) + 1
    assert main(["predict", str(run_dir), "--crops", "ten_crop", "--resolutions", "32", "48"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    # only the top-2 of each image kept; enough for a top-1 submission
    assert main(["predict", str(run_dir), "--keep-top-k", "2", "--out", str(tmp_path / "top2"),
                 "--submission", str(tmp_path / "top2.csv")]) == 0
    top2 = Predictions.load(tmp_path / "top2")
    assert top2.kept_top_k == 2 and top2.probs is None and top2.ids == original.ids
    assert top2.top_k(2) == again.top_k(2)
    assert main(["predict", str(run_dir), "--out", str(tmp_path / "p.npz")]) == 2
    assert "without the .npz suffix" in capsys.readouterr().err


def test_sweep_chooses_the_test_resolution_on_validation(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["sweep_resolutions"] = [32, 40, 48]
    tiny_recipe_dict["evaluate"]["split"] = "val"
    tiny_recipe_dict["dataset"].update(holdout=0.25, val_split="holdout")
    out = tmp_path / "sweep"
    assert main(["sweep", write_recipe(tmp_path, tiny_recipe_dict), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    best = max(result["sweep"].items(), key=lambda kv: (kv[1], -int(kv[0])))[0]
    assert result["test_resolution"] == int(best)
    assert set(result["sweep"]) == {"32", "40", "48"}
    for name in ("train", f"adapt-{best}", "sweep-40"):
        assert (out / name / "evaluation.json").is_file()
    swept = yaml.safe_load((out / "sweep-40" / "recipe.yaml").read_text())
    assert swept["evaluate"]["split"] == "holdout"  # chosen on held-out training images
    printed = capsys.readouterr().out
    assert f"| {best} (chosen) |" in printed and "adapted |" in printed
    assert (out / "result.md").read_text() == printed
