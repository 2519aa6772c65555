"""``fgvc export`` on the quickstart run (shrunk: ResNet-18, 32 px -> adapted at 48 px, one epoch
each): every format matches the network within 1e-4, carries the run's test DA and class names,
loads in plain timm (the timm folder), and ``fgvc predict`` from an export equals ``fgvc
predict`` from the run; serving an ONNX export imports no torch. Bad input is one line and
leaves nothing behind."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_helpers import ADAPT_K, leftovers, make_photos, one_error_line, readable, shrunk_run
from PIL import Image

import fgvc
from fgvc.cli import main
from fgvc.errors import ExportError
from fgvc.inference.exported import ExportFolder, load_runner


@pytest.fixture(scope="module")
def quickstart(tiny_data_root, tmp_path_factory) -> Path:
    return shrunk_run("quickstart", tiny_data_root, tmp_path_factory.mktemp("quickstart"))


@pytest.fixture(scope="module")
def photos(tiny_data_root, tmp_path_factory) -> Path:
    return make_photos(tiny_data_root, tmp_path_factory.mktemp("photos"))


_EXPORTS: dict[tuple[Path, str], Path] = {}


@pytest.fixture(scope="module")
def export_of(tmp_path_factory):
    """``export_of(run, fmt)``: the run exported to ``fmt`` once per module, through the CLI."""
    root = tmp_path_factory.mktemp("exports")

    def make(run: Path, fmt: str) -> Path:
        key = (run, fmt)
        if key not in _EXPORTS:
            out = root / f"{run.name}-{fmt}"
            assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
            _EXPORTS[key] = out
        return _EXPORTS[key]

    yield make
    _EXPORTS.clear()


@pytest.mark.parametrize("fmt, model_file", [("onnx", "model.onnx"), ("torchscript", "model.pt2"),
                                             ("timm", "model.safetensors")])
def test_every_format_matches_the_network_and_carries_the_test_da(quickstart, photos, export_of,
                                                                 fmt, model_file, capsys):
    out = export_of(quickstart, fmt)
    printed = capsys.readouterr().out
    difference = float(printed.split("PyTorch on 8 images: ")[1].split()[0])
    assert difference <= 1e-4
    assert f"exported resnet18 at {ADAPT_K} px (the adapted resolution) as {fmt}" in printed
    names = {"README.md", "classes.json", "preprocess.json", "fgvc-recipe.yaml", model_file}
    assert names <= {p.name for p in out.iterdir()}
    assert not (out / "recipe.yaml").exists()  # an export is not a run folder

    run = fgvc.load_run(quickstart)
    export = ExportFolder.open(out)
    cfg = run.data_config
    assert (export.resolution, export.preprocess.resize) == (ADAPT_K, int(ADAPT_K / cfg.crop_pct))
    assert (export.preprocess.interpolation, export.preprocess.mean, export.preprocess.std) == \
        (cfg.interpolation, tuple(cfg.mean), tuple(cfg.std))
    assert (export.class_ids, export.class_names) == (run.class_ids, run.class_names)

    # Real images through the saved preprocessing: the exported model's logits are the
    # network's within 1e-4.
    import torch

    batch = np.stack([export.preprocess(Image.open(p).convert("RGB")) for p in readable(photos)])
    with torch.no_grad():
        expected = run.model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(load_runner(export, "cpu")(batch), expected, rtol=0, atol=1e-4)

    card = (out / "README.md").read_text()
    evaluation = run.metrics["evaluation"]["after_adaptation"][str(ADAPT_K)]
    low, high = evaluation["top1_ci95"]
    assert f"| **{ADAPT_K} px (exported)** |" in card
    assert f"{evaluation['top1']:.1f} [{low:.1f}, {high:.1f}]" in card
    assert "before adaptation" in card and "after adaptation" in card and "synthetic" in card
    assert f"fgvc export {quickstart} --format {fmt}" in card


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "timm"])
def test_predict_from_an_export_equals_predict_from_the_run(quickstart, photos, export_of, fmt,
                                                            tmp_path):
    out = export_of(quickstart, fmt)
    from_run, from_export = tmp_path / "run.csv", tmp_path / "export.csv"
    args = ["--images", str(photos), "--top-k", "4"]
    assert main(["predict", str(quickstart), *args, "--crops", "center", "--out", str(from_run)]) == 0
    assert main(["predict", str(out), *args, "--out", str(from_export)]) == 0
    run_rows = list(csv.reader(from_run.open()))
    export_rows = list(csv.reader(from_export.open()))
    assert len(run_rows) == 1 + len(readable(photos)) == len(export_rows)
    for a, b in zip(run_rows[1:], export_rows[1:], strict=True):
        assert a[0] == b[0] and a[1::2] == b[1::2]  # same files, same classes in the same order
        assert np.allclose([float(s) for s in a[2::2]], [float(s) for s in b[2::2]], atol=2e-6)


def test_the_timm_folder_loads_in_plain_timm_and_predicts_as_fgvc(quickstart, photos, export_of):
    out = export_of(quickstart, "timm")
    config = json.loads((out / "config.json").read_text())
    assert (config["architecture"], config["num_classes"]) == ("resnet18", 4)
    run = fgvc.load_run(quickstart)
    assert config["label_names"] == run.class_names
    pretrained = config["pretrained_cfg"]
    cfg = run.data_config
    assert (pretrained["input_size"], pretrained["crop_pct"], pretrained["interpolation"],
            pretrained["mean"], pretrained["std"]) == \
        ([3, ADAPT_K, ADAPT_K], cfg.crop_pct, cfg.interpolation, list(cfg.mean), list(cfg.std))
    # A fresh interpreter with timm only: timm's own loaders and its own transform from the
    # folder's configuration; fgvc is never imported.
    code = f"""
import json, sys, timm, torch
from PIL import Image
folder, files = {str(out)!r}, {[str(p) for p in readable(photos)]!r}
by_dir = timm.create_model("local-dir:" + folder, pretrained=True).eval()
by_file = timm.create_model("resnet18", pretrained=True, num_classes=4, pretrained_cfg_overlay=
    {{"file": folder + "/model.safetensors", "num_classes": 4}}).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=by_dir))
x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
with torch.no_grad():
    a, b = by_dir(x).softmax(-1), by_file(x).softmax(-1)
print(json.dumps({{"a": a.tolist(), "b": b.tolist(), "fgvc": "fgvc" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=out)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fgvc"] is False
    preds = fgvc.predict(run, [str(p) for p in readable(photos)], crops="center")
    np.testing.assert_allclose(result["a"], preds.probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result["b"], preds.probs, rtol=0, atol=1e-6)


def test_serving_an_onnx_export_imports_no_torch(quickstart, photos, export_of, tmp_path):
    out = export_of(quickstart, "onnx")
    code = ("import sys\nfrom fgvc.cli import main\ncode = main(sys.argv[1:])\n"
            "print('EXIT', code, 'TORCH', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, "predict", str(out), "--images",
                           str(photos), "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=300)
    assert "EXIT 0 TORCH False" in done.stdout, done.stdout + done.stderr
    assert "skipped 1 of 6 images that could not be read" in done.stderr
    assert len(list(csv.reader((tmp_path / "p.csv").open()))) == 1 + len(readable(photos))


def test_a_run_without_its_adapted_weights_is_refused(quickstart, tmp_path, capsys):
    copy = tmp_path / "unfinished"
    shutil.copytree(quickstart, copy, ignore=shutil.ignore_patterns("tensorboard", "*.png"))
    (copy / "checkpoints" / "adapt.pt").unlink()
    assert main(["export", str(copy), "--format", "onnx"]) == 2
    err = one_error_line(capsys)
    assert "adapt.pt not found: the run has not finished its last stage" in err
    assert not list(copy.glob("export-*")) and not leftovers(copy)


def test_an_unknown_format_is_one_line(quickstart, capsys):
    assert main(["export", str(quickstart), "--format", "onnxx"]) == 2
    assert one_error_line(capsys) == ("error: --format onnxx: unknown export format (did you "
                                      "mean 'onnx'?) (known: onnx, torchscript, timm)")
    with pytest.raises(ExportError, match="unknown export format"):
        fgvc.export(quickstart, "tflite")
    assert main(["export", str(quickstart), "--format", "timm", "--push", "no-owner"]) == 2
    assert one_error_line(capsys) == ("error: --push no-owner: expected a Hugging Face "
                                      "repository id, e.g. your-name/cub200-resnet50")


def test_an_unwritable_output_is_one_line_and_nothing_is_written(quickstart, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["export", str(quickstart), "--out", str(blocker / "export")]) == 2
    assert f"({blocker} is a file)" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["export", str(quickstart), "--out", str(locked / "export")]) == 2
        assert "(permission denied)" in one_error_line(capsys)


def test_an_existing_output_is_kept_unless_forced(quickstart, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["export", str(quickstart), "--format", "timm", "--out", str(out)]) == 2
    assert "exists; pass --force to replace it" in one_error_line(capsys)
    assert (out / "mine.txt").read_text() == "keep me"
    assert main(["export", str(quickstart), "--format", "timm", "--out", str(out), "--force"]) == 0
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()
    assert not leftovers(tmp_path)


def test_a_failed_check_leaves_nothing_behind(quickstart, tmp_path, capsys, monkeypatch):
    import fgvc.workflows.export as workflow

    real = workflow.load_runner

    def off_by_a_little(export, device="auto"):
        runner = real(export, device)
        return lambda batch: runner(batch) + 2e-4  # an export that drifted from the network

    monkeypatch.setattr(workflow, "load_runner", off_by_a_little)
    out = tmp_path / "export"
    assert main(["export", str(quickstart), "--format", "timm", "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert "the timm export's logits differ from the network's by up to 2.0" in err
    assert "e-04 on 8 images (limit 1e-04); nothing was written" in err
    assert not out.exists() and not leftovers(tmp_path)


def test_a_missing_extra_says_how_to_install_it(quickstart, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["export", str(quickstart), "--out", str(tmp_path / "e")]) == 2
    assert one_error_line(capsys) == (
        "error: fgvc export --format onnx needs onnxscript, which is not installed: pip install "
        "'fgvc[export]' (onnx, onnxruntime, onnxscript)")
    assert not list(tmp_path.iterdir())


def test_an_export_predicts_image_files_only(quickstart, photos, export_of, capsys):
    out = export_of(quickstart, "onnx")
    capsys.readouterr()
    assert main(["predict", str(out)]) == 2
    assert "is an exported model: it predicts image files, give --images" in one_error_line(capsys)
    assert main(["predict", str(out), "--images", str(photos), "--resolutions", "64"]) == 2
    assert f"was exported at {ADAPT_K} px and predicts at that resolution only" in \
        one_error_line(capsys)


def test_torch_program_falls_back_to_a_trace_where_torch_export_fails(quickstart, photos,
                                                                      tmp_path, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("this network is not capturable")

    monkeypatch.setattr(torch.export, "export", refuse)
    result = fgvc.export(quickstart, "torchscript", out=tmp_path / "ts", resolution=64)
    assert result.resolution == 64 and result.difference <= 1e-4
    assert "TorchScript trace (torch.export failed: RuntimeError: this network" in result.how
    assert (tmp_path / "ts" / "model.ts").is_file() and not (tmp_path / "ts" / "model.pt2").exists()
    files = [str(p) for p in readable(photos)]
    got = fgvc.predict(tmp_path / "ts", files)
    want = fgvc.predict(quickstart, files, resolutions=[64], crops="center")
    np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-6)
    assert "64 px (exported)" in (tmp_path / "ts" / "README.md").read_text()
