"""Item 11: every per-image decoder failure is handled per file, by `verify`, training,
evaluation and prediction alike: skipped and counted under `on_bad_image: skip`, named in one
line otherwise. The decoders' own stops (KeyboardInterrupt, Preempted) are never swallowed."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fgvc.cli import main
from fgvc.datasets import DatasetError
from fgvc.datasets.base import Sample
from fgvc.datasets.decode import BAD_IMAGE_ERRORS, UnreadableImage, open_rgb
from fgvc.datasets.images import ImageDataset, collate_skipping_bad
from fgvc.engine.preemption import Preempted
from fgvc.inference.image_files import ImageItems, collate_items
from fgvc.transforms import DataConfig, FastTest, FastTrain

REASON = "NotImplementedError from the decoder: Unknown pixel format flags 0"


def unsupported_image(path: Path) -> Path:
    """A DirectDraw Surface header whose pixel format Pillow's DDS plugin does not implement:
    Pillow recognises the file by its magic bytes whatever its name, and raises
    NotImplementedError, not an OSError."""
    header = struct.pack("<3I", 0x1007, 8, 8) + bytes(56) + struct.pack("<4I", 32, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DDS " + struct.pack("<I", 124) + header + bytes(36))
    return path


def good_image(path: Path, colour=(200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 36), colour).save(path)
    return path


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy())


def test_plugin_errors_are_bad_images(tmp_path, monkeypatch):
    unsupported_image(tmp_path / "drawing.png")
    with pytest.raises(UnreadableImage, match=REASON) as caught:
        open_rgb(tmp_path, "drawing.png")
    assert isinstance(caught.value, BAD_IMAGE_ERRORS)
    # Whatever a plugin raises for one file, not only NotImplementedError.
    good_image(tmp_path / "ok.png")
    for error in (IndexError("tile out of range"), TypeError("bad tile"), struct.error("short"),
                  KeyError("xmp"), ZeroDivisionError("zero")):
        def broken(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(Image, "open", broken)
        with pytest.raises(UnreadableImage, match=f"{type(error).__name__} from the decoder"):
            open_rgb(tmp_path, "ok.png")


@pytest.mark.parametrize("kind", ["reference", "fast_train", "fast_test"])
def test_training_skips_counts_or_names_an_unsupported_image(tmp_path, kind):
    good_image(tmp_path / "ok.jpg")
    unsupported_image(tmp_path / "drawing.png")
    samples = [Sample("ok.jpg", 0, "a"), Sample("drawing.png", 1, "b")]
    transform = {"reference": to_tensor, "fast_train": FastTrain(16, DataConfig()),
                 "fast_test": FastTest(16, DataConfig())}[kind]
    skipping = ImageDataset(tmp_path, samples, transform, on_bad_image="skip")
    images, labels, _, bad = collate_skipping_bad([skipping[0], skipping[1]])
    assert len(images) == 1 and labels.tolist() == [0] and bad == 1
    failing = ImageDataset(tmp_path, samples, transform, on_bad_image="fail")
    with pytest.raises(DatasetError) as caught:
        failing[1]
    message = str(caught.value)
    assert message == f"cannot read image {tmp_path / 'drawing.png'}: {REASON}"
    assert "\n" not in message


def test_verify_names_an_unsupported_image(tmp_path, capsys):
    from fgvc.datasets.layouts import write_cub200

    write_cub200(tmp_path)
    listed = sorted((tmp_path / "CUB_200_2011" / "images").rglob("*.jpg"))[0]
    unsupported_image(listed)
    assert main(["datasets", "verify", "cub200", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "24 image(s) checked, 0 missing, 1 unreadable, 0 over the pixel limit" in out
    rel = listed.relative_to(tmp_path / "CUB_200_2011").as_posix()
    assert [line for line in out.splitlines() if line.startswith("unreadable:")] == [
        f"unreadable: {rel} ({REASON})"]


def test_prediction_skips_an_unsupported_image(tmp_path):
    good_image(tmp_path / "photos" / "ok.jpg")
    unsupported_image(tmp_path / "photos" / "drawing.png")
    items = ImageItems([tmp_path / "photos" / "drawing.png", tmp_path / "photos" / "ok.jpg"],
                       to_tensor)
    images, _, indices, n_bad, bad = collate_items([items[0], items[1]])
    assert indices.tolist() == [1] and n_bad == 1 and bad == [(0, REASON)]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Preempted(signal.SIGTERM)],
                         ids=["KeyboardInterrupt", "Preempted"])
def test_stops_are_never_taken_for_bad_images(tmp_path, monkeypatch, stop):
    from fgvc.datasets.base import DatasetIndex
    from fgvc.datasets.inspect import verify

    good_image(tmp_path / "ok.png")
    samples = [Sample("ok.png", 0, "a")]

    def interrupted(*args, **kwargs):
        raise stop

    monkeypatch.setattr(Image, "open", interrupted)
    for read in (lambda: open_rgb(tmp_path, "ok.png"),
                 lambda: ImageDataset(tmp_path, samples, to_tensor, on_bad_image="skip")[0],
                 lambda: ImageDataset(tmp_path, samples, FastTest(16, DataConfig()))[0],
                 lambda: ImageItems([tmp_path / "ok.png"], to_tensor)[0],
                 lambda: verify(DatasetIndex("x", tmp_path, ["a"], ["1"], {"train": samples}))):
        with pytest.raises(type(stop)):
            read()


def test_memory_errors_are_not_the_files(tmp_path, monkeypatch):
    good_image(tmp_path / "ok.png")

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image, "open", exhausted)
    with pytest.raises(MemoryError):
        open_rgb(tmp_path, "ok.png")


# ---- a whole run: training and evaluation (a split's prediction for a submission needs
# every image by design: fgvc/workflows/pipeline.py, predict_split) ----


def _broken_copy(tiny_data_root: Path, root: Path) -> dict[str, str]:
    """The tiny synthetic dataset with its first train and val images replaced by an
    unsupported file under the same name."""
    shutil.copytree(tiny_data_root, root)
    broken = {}
    for split in ("train", "val"):
        rel = (root / f"{split}.csv").read_text().splitlines()[1].split(",")
        path = next(value for value in rel if value.endswith(".jpg"))
        unsupported_image(root / path)
        broken[split] = path
    return broken


def _one_stage_recipe(root: Path, out: Path) -> Path:
    from conftest import TINY_OPTIONS

    recipe = {
        "name": "bad", "seed": 0, "device": "cpu", "output_root": str(out / "runs"),
        "dataset": {"name": "synthetic", "root": str(root), "options": TINY_OPTIONS,
                    "num_workers": 0},
        "model": {"arch": "test_resnet"},
        "stages": [{"name": "train", "resolution": 32, "epochs": 1, "batch_size": 8,
                    "optimizer": {"name": "sgd", "lr": 0.05}}],
        "evaluate": {"resolutions": [32], "batch_size": 16},
        "predict": None,
        "submission": None,
    }
    path = out / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def broken_run(tiny_data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("broken_run")
    broken = _broken_copy(tiny_data_root, out / "data")
    recipe = _one_stage_recipe(out / "data", out)
    status = main(["run", str(recipe)])
    return status, out / "runs" / "bad", broken, recipe


def test_run_skips_and_counts_unsupported_images(broken_run):
    from conftest import TINY_OPTIONS

    status, run_dir, _, _ = broken_run
    assert status == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["bad_images"] for r in rows] == [2]  # one in train, one in the validation
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    (phase,) = evaluation.values()
    assert phase["32"]["bad_images"] == 1
    assert phase["32"]["images"] == TINY_OPTIONS["num_classes"] * TINY_OPTIONS["val_per_class"] - 1


def test_run_names_an_unsupported_image_under_fail(broken_run, tmp_path, capsys):
    _, _, broken, recipe = broken_run
    capsys.readouterr()
    assert main(["run", str(recipe), "--set", "dataset.on_bad_image=fail",
                 "--set", f"output_root={tmp_path}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    root = recipe.parent / "data"
    assert errors == [f"error: cannot read image {root / broken['train']}: {REASON}"]


def test_predict_images_names_an_unsupported_image(broken_run, tmp_path, caplog):
    _, run_dir, _, _ = broken_run
    good_image(tmp_path / "photos" / "ok.jpg")
    unsupported_image(tmp_path / "photos" / "drawing.png")
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(run_dir), "--images", str(tmp_path / "photos"),
                     "--out", str(tmp_path / "preds.csv")]) == 0
    skipped = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert skipped == [f"skipped 1 of 2 images that could not be read: "
                       f"{tmp_path / 'photos' / 'drawing.png'} ({REASON})"]
    assert "Traceback" not in caplog.text
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 2  # header + the good one
