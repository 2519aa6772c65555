"""report.md sections and figures, its metrics against scikit-learn, and the trackers."""

from __future__ import annotations

import json
import logging
import sys
import types

import numpy as np
import pytest

from fgvc.analysis.metrics import compute_metrics


def test_report_has_every_section_and_figure(finished_run):
    text = (finished_run / "report.md").read_text()
    assert text.startswith("# finished: test_resnet on synthetic, device cpu")
    assert "**Stand-in data.**" in text  # generated data: not comparable to the paper
    for heading in ("## Stages and time", "## Training curves", "## Accuracy vs test resolution",
                    "## Per class (val split at 40 px", "## Test split", "## Outputs"):
        assert heading in text, heading
    for png in ("training_curves.png", "accuracy_vs_resolution.png", "confusion.png"):
        assert (finished_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    # 4 classes: top-5 would be 100 %, so it is not shown anywhere
    assert "top-5" not in text.replace("top-5 not shown", "")
    assert "answer file" in text and "test_labels.csv" in text
    assert "evaluation before adaptation: 32 px" in text and "prediction:" in text


def test_report_numbers_equal_scikit_learns(finished_run, tiny_data_root):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from fgvc.analysis.metrics import labels_for
    from fgvc.datasets.synthetic import read_test_labels
    from fgvc.inference.predictions import Predictions

    text = (finished_run / "report.md").read_text()
    preds = Predictions.load(finished_run / "predictions")
    truth = labels_for(preds.ids, read_test_labels(tiny_data_root), preds.class_ids)
    predicted = preds.probs.astype(np.float32).argmax(1)
    test_part = text.split("## Test split")[1]
    assert f"| top-1 | {100 * accuracy_score(truth, predicted):.1f} |" in test_part
    assert f"| {100 * balanced_accuracy_score(truth, predicted):.1f} |" in test_part
    assert f"| {100 * f1_score(truth, predicted, average='macro'):.1f} |" in test_part

    import pandas as pd

    per_class = pd.read_csv(finished_run / "per_class_accuracy.csv", dtype={"category_id": str})
    val = Predictions.load(finished_run / "eval_predictions")
    answers = {row["id"]: row["category_id"] for row in
               pd.read_csv(tiny_data_root / "val.csv", dtype=str).to_dict("records")}
    y = labels_for(val.ids, answers, val.class_ids)
    p = val.probs.astype(np.float32).argmax(1)
    for row in per_class.itertuples():
        mask = y == row.label
        assert row.accuracy == pytest.approx(100 * (p[mask] == row.label).mean(), abs=0.01)
    assert len(per_class) == 4 and list(per_class["accuracy"]) == sorted(per_class["accuracy"])


def test_metrics_match_scikit_learn_on_random_predictions():
    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        top_k_accuracy_score,
    )

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 300)
    probs = rng.random((300, 12)).astype(np.float32)
    probs[np.arange(300), labels] += rng.random(300)  # better than chance
    names = [f"class{k}" for k in range(12)]
    m = compute_metrics(labels, probs, names)
    predicted = probs.argmax(1)
    assert m.top1 == pytest.approx(100 * (predicted == labels).mean())
    assert m.top5 == pytest.approx(100 * top_k_accuracy_score(labels, probs, k=5))
    assert m.macro_accuracy == pytest.approx(100 * balanced_accuracy_score(labels, predicted))
    assert m.macro_f1 == pytest.approx(100 * f1_score(labels, predicted, average="macro"))
    assert (m.confusion == confusion_matrix(labels, predicted)).all()
    worst = min(m.per_class, key=lambda r: r["accuracy"])
    mask = labels == worst["label"]
    assert worst["accuracy"] == pytest.approx(100 * (predicted[mask] == worst["label"]).mean())
    top = m.confused_pairs[0]
    off = m.confusion.copy()
    np.fill_diagonal(off, 0)
    assert top["count"] == off.max()


def test_many_classes_give_confused_pairs_not_a_matrix(tmp_path):
    from fgvc.report import plot_confusion

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 80, 400)
    probs = rng.random((400, 80)).astype(np.float32)
    m = compute_metrics(labels, probs, [f"c{k}" for k in range(80)])
    assert m.confusion is None and 0 < len(m.confused_pairs) <= 20
    counts = [p["count"] for p in m.confused_pairs]
    assert counts == sorted(counts, reverse=True)
    plot_confusion(m, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_table3_smoke_output_carries_the_banner(tmp_path):
    from fgvc.workflows.table3 import RowResult, write_outputs

    write_outputs([RowResult("cub200", status="skipped: test")], tmp_path, smoke=True)
    assert "not comparable to the paper" in (tmp_path / "table3.md").read_text()
    write_outputs([RowResult("cub200", status="skipped: test")], tmp_path, smoke=False)
    assert "not comparable" not in (tmp_path / "table3.md").read_text()


# ---- experiment tracking ----

def test_tensorboard_events_hold_the_expected_tags(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(finished_run / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/step/loss", "train/step/lr", "adapt/step/loss", "train/epoch/train_loss",
                "train/epoch/val_top1", "adapt/epoch/val_top1", "eval/before_adaptation/top1",
                "eval/after_adaptation/top1"):
        assert tag in scalars, tag
    # 2 epochs of 24 images in batches of 8 (drop_last): 3 steps an epoch, 6 in all; the loss is
    # read from the device every LOG_EVERY (50) steps and at the end of each epoch
    assert [e.step for e in acc.Scalars("train/step/loss")] == [3, 6]
    assert [e.step for e in acc.Scalars("train/epoch/val_top1")] == [1, 2]
    assert sorted(e.step for e in acc.Scalars("eval/after_adaptation/top1")) == [32, 40]
    assert "accuracy_vs_resolution" in acc.Tags()["images"]
    metrics = [json.loads(line) for line in
               (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert acc.Scalars("train/epoch/val_top1")[-1].value == pytest.approx(metrics[1]["val_top1"])


class _Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return record


def _tracking(**kwargs):
    from fgvc.recipes.recipe import TrackingConfig

    return TrackingConfig(**kwargs)


def test_wandb_and_mlflow_receive_the_same_records(tmp_path, monkeypatch):
    from fgvc.tracking import open_tracker

    wandb, mlflow = _Recorder(), _Recorder()
    wandb.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    tracker = open_tracker(_tracking(tensorboard=False, wandb={"project": "fgvc"},
                                     mlflow={"experiment": "e"}), "run1", tmp_path, {"a": {"b": 1}})
    assert len(tracker.backends) == 2
    tracker.step("train", 3, 0.5, 0.1)
    tracker.epoch({"stage": "adapt", "epoch": 1, "val_top1": 50.0})
    tracker.close()
    init = [c for c in wandb.calls if c[0] == "init"][0]
    assert init[2]["project"] == "fgvc" and init[2]["name"] == "run1"
    logged = [c[1][0] for c in wandb.calls if c[0] == "log"]
    assert {"train/step/loss": 0.5, "train/step/lr": 0.1, "step": 3} in logged
    metrics = [c for c in mlflow.calls if c[0] == "log_metrics"]
    assert metrics[1][1][0] == {"adapt/epoch/val_top1": 50.0} and metrics[1][2] == {"step": 1}
    assert ("log_params", ({"a.b": "1"},), {}) in mlflow.calls
    assert any(c[0] == "end_run" for c in mlflow.calls) and any(c[0] == "finish" for c in wandb.calls)


def test_missing_package_or_credentials_is_one_line(tmp_path, monkeypatch, caplog):
    from fgvc.tracking import open_tracker

    caplog.set_level(logging.WARNING)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    tracker = open_tracker(_tracking(tensorboard=False, wandb={"project": "p"}, mlflow={}),
                           "r", tmp_path, {})
    assert not tracker
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "tracking.wandb: no W&B credentials" in warnings[0]
    assert "tracking.mlflow: the mlflow package is not installed" in warnings[1]


def test_tracking_section_is_checked():
    from fgvc.recipes.recipe import parse_recipe
    from fgvc.recipes.schema import SchemaError

    with pytest.raises(SchemaError, match="tracking.wandb.project: required"):
        parse_recipe({"name": "x", "dataset": {"name": "synthetic"}, "model": {"arch": "resnet18"},
                      "stages": [{"name": "train", "resolution": 32}], "tracking": {"wandb": {}}})
