"""``fgvc export`` on the transformer quickstart, shrunk, with timm's tiny ``test_vit`` (16 px
patches, position embedding for a 32 px grid, interpolated on every forward pass; 32 px ->
adapted at 48 px): every format matches the network within 1e-4 and predicts as the run does,
the timm folder records the embedding's grid and loads in timm, and a resolution the network
cannot run at (one its patches do not divide) is one line that leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import (
    ADAPT_K,
    TRAIN_K,
    leftovers,
    make_photos,
    one_error_line,
    readable,
    shrunk_run,
)

import fgvc
from fgvc.cli import main
from fgvc.inference.exported import ExportFolder


@pytest.fixture(scope="module")
def vit_run(tiny_data_root, tmp_path_factory) -> Path:
    return shrunk_run("quickstart_vit", tiny_data_root, tmp_path_factory.mktemp("vit"),
                      ["model.arch=test_vit", f"model.img_size={TRAIN_K}"])


@pytest.fixture(scope="module")
def photos(tiny_data_root, tmp_path_factory) -> Path:
    return make_photos(tiny_data_root, tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "timm"])
def test_a_vit_exports_to_every_format_and_predicts_as_the_run(vit_run, photos, fmt, tmp_path,
                                                              capsys):
    out = tmp_path / "export"
    assert main(["export", str(vit_run), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert float(printed.split("PyTorch on 8 images: ")[1].split()[0]) <= 1e-4
    assert f"exported test_vit at {ADAPT_K} px (the adapted resolution)" in printed
    export = ExportFolder.open(out)
    assert (export.resolution, export.preprocess.interpolation) == (ADAPT_K, "bicubic")
    files = [str(p) for p in readable(photos)]
    got = fgvc.predict(out, files)
    want = fgvc.predict(vit_run, files, crops="center")
    assert got.ids == want.ids and got.class_names == want.class_names
    np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-5)
    if fmt == "timm":
        config = json.loads((out / "config.json").read_text())
        assert config["model_args"]["img_size"] in (TRAIN_K, [TRAIN_K, TRAIN_K])
        assert config["model_args"]["dynamic_img_size"] is True
        assert config["pretrained_cfg"]["input_size"] == [3, ADAPT_K, ADAPT_K]


def test_a_resolution_the_network_cannot_run_at_is_one_line(vit_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(vit_run), "--format", "torchscript", "--resolution", "40",
                 "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert err.startswith("error: test_vit cannot run at 40 px (")
    assert "divisible by patch size" in err and err.endswith("choose another --resolution")
    assert not out.exists() and not leftovers(tmp_path)
    # At a multiple of its patch size it exports and serves at that size.
    assert main(["export", str(vit_run), "--format", "torchscript", "--resolution", "64",
                 "--out", str(out)]) == 0
    assert "at 64 px (not the adapted 48 px)" in capsys.readouterr().out
    assert ExportFolder.open(out).resolution == 64
