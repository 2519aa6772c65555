"""precision: auto picks bf16 only where it runs natively; an explicit bf16 on a CPU without
native bf16 runs with a warning on the console, in log.txt and in report.md. Logging: the same
console lines from fgvc.run() as from the command, log.txt complete from the run's first
record, no handler left behind. The run ETA prices the whole run's passes."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import types

import pytest
import torch

import fgvc
import fgvc.engine.device as device_module
from fgvc.engine.device import (
    autocast_dtype,
    channels_last_on,
    precision_record,
    set_precision,
)
from fgvc.logs import RunLog, open_run_file
from fgvc.progress import Work, run_eta
from fgvc.report import seconds_text

CPU = torch.device("cpu")
WARNING_TEXT = "precision bf16 on a CPU without AMX or AVX512-BF16"


@pytest.fixture
def precision_restored(monkeypatch):
    """Whatever a test sets, the process's precision is back to its value afterwards."""
    monkeypatch.setitem(device_module._PRECISION, "value", device_module._PRECISION["value"])


@pytest.fixture
def no_native_bf16(monkeypatch, precision_restored):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch, precision_restored):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)


@contextlib.contextmanager
def unconfigured_logging():
    """The root logger as in a fresh script or notebook: no handler, level WARNING (pytest's
    handlers, added for the test's call after the fixtures, are put back after)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])


def test_auto_is_fp32_on_a_cpu_without_native_bf16(no_native_bf16):
    set_precision("auto", CPU)
    assert autocast_dtype(CPU) is None
    assert not channels_last_on(CPU, True)  # fp32 on the CPU keeps the default layout
    assert precision_record(CPU) == {"requested": "auto", "used": "fp32", "native_bf16": False}


def test_auto_is_bf16_on_a_cpu_with_native_bf16(native_bf16):
    set_precision("auto", CPU)
    assert autocast_dtype(CPU) is torch.bfloat16
    assert channels_last_on(CPU, True) and not channels_last_on(CPU, False)
    assert precision_record(CPU) == {"requested": "auto", "used": "bf16", "native_bf16": True}


def test_fp32_never_autocasts(native_bf16):
    set_precision("fp32", CPU)
    assert autocast_dtype(CPU) is None and not channels_last_on(CPU, True)


def test_explicit_bf16_is_honoured_with_a_warning(no_native_bf16, caplog):
    with caplog.at_level(logging.WARNING, logger="fgvc.engine.device"):
        set_precision("bf16", CPU)
    assert autocast_dtype(CPU) is torch.bfloat16
    assert channels_last_on(CPU, True)  # oneDNN's bf16 kernels want channels-last
    assert [r.getMessage() for r in caplog.records if WARNING_TEXT in r.getMessage()]
    record = precision_record(CPU)
    assert record["used"] == "bf16" and WARNING_TEXT in record["warning"]


def test_explicit_bf16_on_a_native_cpu_has_no_warning(native_bf16, caplog):
    with caplog.at_level(logging.WARNING, logger="fgvc.engine.device"):
        set_precision("bf16", CPU)
    assert not [r for r in caplog.records if WARNING_TEXT in r.getMessage()]
    assert "warning" not in precision_record(CPU)


def _short(recipe: dict, name: str) -> dict:
    """One epoch per stage: enough to go through every step of a run."""
    recipe["name"] = name
    for stage in recipe["stages"]:
        stage["epochs"] = 1
    return recipe


def test_api_run_without_logging_config_shows_progress_and_writes_a_complete_log(
        tiny_recipe_dict, no_native_bf16, capsys, monkeypatch):
    monkeypatch.setenv("FGVC_PROGRESS", "log")
    fgvc_logger = logging.getLogger("fgvc")
    level, propagate = fgvc_logger.level, fgvc_logger.propagate
    with unconfigured_logging():
        run = fgvc.run(_short(tiny_recipe_dict, "bf16"), precision="bf16")
        left = logging.getLogger().handlers[:]
    console = capsys.readouterr().err
    # The command's console lines, from Python without any logging set up
    assert f"WARNING {WARNING_TEXT}" in console
    assert "INFO run folder" in console and "INFO train epoch 1/1" in console
    assert "INFO train 1/1: " in console and " img/s" in console  # progress lines
    log = (run.run_dir / "log.txt").read_text()
    # log.txt: the warning logged before the folder existed comes first, then the rest
    assert log.index(WARNING_TEXT) < log.index("run folder")
    assert log.count(WARNING_TEXT) == 1  # once, though the activation statistics run after
    assert "INFO fgvc.engine.stage: train epoch 1/1" in log and "run ETA" in log
    assert "INFO fgvc.progress: train 1/1: " in log
    report = (run.run_dir / "report.md").read_text()
    assert "Precision: `bf16` -> **bf16** on cpu (bf16 is emulated here" in report
    assert f"> **Warning.** {WARNING_TEXT}" in report
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["precision"]["requested"] == "bf16" and summary["precision"]["used"] == "bf16"
    assert summary["precision"]["native_bf16"] is False
    # nothing left behind
    assert left == [] and fgvc_logger.handlers == []
    assert (fgvc_logger.level, fgvc_logger.propagate) == (level, propagate)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_callers_logging_config_is_kept_and_log_txt_is_complete(
        tiny_recipe_dict, no_native_bf16, capsys, monkeypatch):
    import fgvc.workflows.pipeline as pipeline
    from fgvc.recipes.recipe import parse_recipe
    from fgvc.workflows.pipeline import run_recipe

    real_load = pipeline.load_recipe_dataset

    def load_with_a_warning(recipe):  # as a dataset adapter warns, before the folder exists
        logging.getLogger("fgvc.datasets.test").warning("3 images are duplicates")
        return real_load(recipe)

    monkeypatch.setattr(pipeline, "load_recipe_dataset", load_with_a_warning)
    root = logging.getLogger()
    theirs = _Collect()
    began = time.perf_counter() - 1000.0  # an invocation that began 1000 s ago
    with unconfigured_logging():
        root.addHandler(theirs)  # e.g. logging.basicConfig(level=logging.WARNING)
        run_dir = run_recipe(parse_recipe(_short(tiny_recipe_dict, "configured")), started=began)
        left = root.handlers[:]
    # their handler gets what it got before: the warnings, no INFO line
    # (the dataset is read twice: for the run and for its activation statistics)
    assert {r.getMessage() for r in theirs.records} == {"3 images are duplicates"}
    assert "INFO" not in capsys.readouterr().err  # no console of ours beside theirs
    log = (run_dir / "log.txt").read_text()
    assert log.count("WARNING fgvc.datasets.test: 3 images are duplicates") == len(theirs.records)
    assert log.index("3 images are duplicates") < log.index("run folder")
    assert "INFO fgvc.engine.stage: train epoch 1/1" in log and WARNING_TEXT not in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == {"requested": "auto", "used": "fp32", "native_bf16": False}
    assert summary["seconds"] >= 1000.0  # the run time counts from the invocation's start
    report = (run_dir / "report.md").read_text()
    assert "Precision: `auto` -> **fp32** on cpu (bf16 would be emulated here" in report
    # the run time counts the report's own making too
    assert f"whole run (this invocation): {seconds_text(summary['seconds'])}" in report
    assert left == [theirs]


def test_cli_log_txt_has_the_early_warning(tiny_recipe_dict, no_native_bf16, tmp_path):
    import yaml

    from fgvc.cli import main

    recipe = tmp_path / "bf16.yaml"
    recipe.write_text(yaml.safe_dump({**_short(tiny_recipe_dict, "cli"), "precision": "bf16"}))
    assert main(["run", str(recipe)]) == 0
    log = (tmp_path / "runs" / "cli" / "log.txt").read_text()
    assert WARNING_TEXT in log and "INFO fgvc.workflows.pipeline: run folder" in log


def test_records_before_the_file_opens_come_first(tmp_path, capsys):
    log = logging.getLogger("fgvc.test_logs")
    with unconfigured_logging(), RunLog():
        log.warning("early %d", 1)
        log.info("early info")
        open_run_file(tmp_path / "log.txt")
        log.info("later")
        logging.getLogger("elsewhere").warning("a library's warning")
    log.info("after the run")
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "early 1", "early info", "later", "a library's warning"]
    assert "INFO early info" in capsys.readouterr().err


def test_nested_runs_each_get_their_file(tmp_path):
    log = logging.getLogger("fgvc.test_logs")
    with unconfigured_logging(), RunLog():
        open_run_file(tmp_path / "outer.txt")
        with RunLog():
            open_run_file(tmp_path / "inner.txt")
            log.info("inside both")
        log.info("outer only")
    assert "inside both" in (tmp_path / "outer.txt").read_text()
    assert "outer only" in (tmp_path / "outer.txt").read_text()
    assert "outer only" not in (tmp_path / "inner.txt").read_text()
    assert logging.getLogger("fgvc").handlers == []


def test_run_eta_prices_training_and_forward_passes_by_pixels():
    work = [Work(100, 64, training=True), Work(50, 64), Work(50, 128)]
    # 0.3 s per trained image and 0.1 s per forward image at 64 px; 128 px has 4x the pixels
    assert run_eta(work, 0.3, 0.1, 64) == pytest.approx(100 * 0.3 + 50 * 0.1 + 50 * 0.1 * 4)
    assert run_eta([], 0.3, 0.1, 64) == 0.0


def test_work_left_covers_evaluation_adaptation_and_prediction(tiny_recipe_dict):
    from fgvc.datasets import load_dataset
    from fgvc.engine.context import RunContext
    from fgvc.engine.remaining import work_left
    from fgvc.models import create_model, data_config
    from fgvc.recipes.recipe import parse_recipe

    recipe = parse_recipe(tiny_recipe_dict)  # train 2 epochs at 32 px, adapt 1 at 48 px
    ds = recipe.dataset
    index = load_dataset(ds.name, ds.root, ds.options)
    model = create_model(recipe.model, index.num_classes)
    ctx = RunContext(recipe, recipe.run_dir, index, model, data_config(model, recipe.model), CPU)
    n_train, n_val, n_test = (len(index.split(s)) for s in ("train", "val", "test"))
    train, adapt = recipe.stages
    assert work_left(ctx, train, 1, 24) == [
        Work(24, 32, True), Work(n_val, 32),  # epoch 2 and its validation
        Work(n_val, 48),  # the evaluation before adaptation (32 px reuses the validation)
        Work(n_train, 48),  # adapt: the frozen part once over its data, epochs on the tail
        # after adaptation, 48 px (reused from adapt's validation) and the per-image
        # predictions at 48 px run on the activations kept before it; 32 px was not kept
        Work(n_val, 32),
        Work(n_test, 48)]  # test predictions
    # during the adapt stage (on cached activations), with the activations kept at 48 px
    ctx.kept = types.SimpleNamespace(views={48: None})
    assert work_left(ctx, adapt, 1, n_train, on_cache=True) == [Work(n_val, 32), Work(n_test, 48)]
    ctx.kept = None
    # train DA in the adapt stage (no cache: whole epochs) and two crops per evaluation image
    # (no reuse of a validation, no kept activations: every pass after adaptation in full)
    tiny_recipe_dict["stages"][1]["augment"] = "train"
    tiny_recipe_dict["evaluate"]["crops"] = "center_flip"
    recipe = parse_recipe(tiny_recipe_dict)
    ctx.recipe = recipe
    train, adapt = recipe.stages
    assert work_left(ctx, train, 2, 24) == [
        Work(0, 32, True), Work(0, 32),
        Work(2 * n_val, 32), Work(2 * n_val, 48),  # before adaptation
        Work(n_train, 48, True), Work(n_val, 48),  # adapt: its epoch and validation
        Work(2 * n_val, 32), Work(2 * n_val, 48),  # after adaptation
        Work(2 * n_val, 48),  # the per-image predictions at the final resolution
        Work(n_test, 48)]


def test_evaluation_throughput_counts_every_crop_and_resolution():
    from fgvc.engine.loop import network_inputs

    ten_crops = torch.zeros(4, 10, 3, 8, 8)  # 4 images, 10 crops each
    assert network_inputs(ten_crops, 4) == 40
    assert network_inputs({64: torch.zeros(4, 1, 3, 8, 8), 80: torch.zeros(4, 3, 8, 8)}, 4) == 8
    assert network_inputs((torch.zeros(4, 16),), 4) == 4  # cached activations: one per image
