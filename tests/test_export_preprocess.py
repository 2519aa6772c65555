"""An export's saved preprocessing reproduces fgvc's test DA value for value (numpy and Pillow
only, no torch), a damaged export folder is refused in one line naming the field, a network a
format cannot represent is refused in one line, and a missing ``fgvc[export]`` extra says how
to install it. No training here: see tests/test_export.py for whole runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc import transforms
from fgvc.errors import ExportError
from fgvc.inference.exported import ExportFolder, Preprocess, is_export_folder
from fgvc.inference.tta import MultiCrop
from fgvc.transforms import DataConfig, resize_size

CONFIGS = {
    "bilinear-imagenet": DataConfig(),
    "bicubic-half": DataConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                               interpolation="bicubic", crop_pct=0.9),
    "nearest-full-crop": DataConfig(interpolation="nearest", crop_pct=1.0),
    "bgr-255": DataConfig(mean=(104 / 255, 117 / 255, 128 / 255), std=(1 / 255,) * 3,
                          input_range=255.0, input_space="BGR"),
}
# (width, height): landscape, portrait, square, smaller than the resize (an upscale), odd sizes
SIZES = [(97, 61), (50, 83), (64, 64), (31, 45), (54, 55)]


def preprocess_of(cfg: DataConfig, k: int) -> Preprocess:
    return Preprocess(crop=k, resize=resize_size(k, cfg.crop_pct), interpolation=cfg.interpolation,
                      mean=cfg.mean, std=cfg.std, input_range=cfg.input_range,
                      input_space=cfg.input_space)


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 6 + 1, size[0] // 6 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), np.int16)
    noise = rng.integers(-20, 21, (size[1], size[0], 1))
    return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_saved_preprocessing_equals_fgvc_test_da(name):
    cfg, k = CONFIGS[name], 48
    ours = preprocess_of(cfg, k)
    for i, size in enumerate(SIZES):
        image = photo(size, i)
        expected = transforms.test_transform(k, cfg)(image).numpy()
        got = ours(image)
        assert got.dtype == np.float32 and got.shape == (3, k, k)
        # The same float32 operations in the same order: equal to the last bit.
        np.testing.assert_array_equal(got, expected)
        # `fgvc predict --images` cuts its centre crop after normalising (tta.MultiCrop):
        # the same values.
        np.testing.assert_allclose(got, MultiCrop(k, cfg, "center")(image)[0].numpy(),
                                   rtol=0, atol=1e-6)


def test_preprocess_json_round_trips_and_describes_each_step():
    ours = preprocess_of(CONFIGS["bgr-255"], 64)
    data = json.loads(json.dumps(ours.to_json()))
    assert Preprocess.from_json(data, "preprocess.json") == ours
    assert data["resize"] == 73 and data["crop"] == 64 and data["input_range"] == 255.0
    assert any("BGR" in step and "255" in step for step in data["steps"])


def write_folder(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {**preprocess_of(DataConfig(), 32).to_json(),
            "model": {"format": "onnx", "file": "model.onnx"}}
    data.update(changes)
    (folder / "preprocess.json").write_text(json.dumps(data))
    (folder / "model.onnx").write_bytes(b"not read by these tests")
    (folder / "classes.json").write_text(json.dumps(
        {"num_classes": 2, "classes": [{"index": 0, "category_id": "7", "name": "a"},
                                       {"index": 1, "category_id": "9", "name": "b"}]}))
    return folder


def test_an_export_folder_is_read_back(tmp_path):
    folder = write_folder(tmp_path / "export")
    assert is_export_folder(folder) and not is_export_folder(tmp_path)
    export = ExportFolder.open(folder)
    assert (export.format, export.resolution, export.class_ids, export.class_names) == \
        ("onnx", 32, ["7", "9"], ["a", "b"])


@pytest.mark.parametrize("changes, message", [
    ({"interpolation": "lanczos"},
     "field 'interpolation': expected one of bilinear, bicubic, nearest, got 'lanczos'"),
    ({"std": [0.2, 0, 0.2]}, "field 'std': expected 3 positive numbers, got [0.2, 0, 0.2]"),
    ({"resize": 16}, "field 'resize': expected a whole number of pixels >= crop (32), got 16"),
    ({"model": {"format": "tflite", "file": "model.onnx"}}, "field 'model': expected"),
])
def test_a_damaged_preprocess_json_is_refused_naming_the_field(tmp_path, changes, message):
    folder = write_folder(tmp_path / "export", **changes)
    with pytest.raises(ExportError) as err:
        ExportFolder.open(folder)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(folder / "preprocess.json") in str(err.value)


def test_damaged_classes_json_is_refused(tmp_path):
    folder = write_folder(tmp_path / "export")
    (folder / "classes.json").write_text(json.dumps({"classes": [{"index": 3, "name": "a"}]}))
    with pytest.raises(ExportError, match=r"classes\[0\]: expected"):
        ExportFolder.open(folder)


class DataDependent(torch.nn.Module):
    """Takes a branch on the values of its input: torch.export (and so ONNX) cannot capture it."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        return self.fc(pooled) if pooled.sum() > 0 else -self.fc(pooled)


def test_a_network_onnx_cannot_represent_gets_one_line(tmp_path):
    from fgvc.models.export import write_onnx

    with pytest.raises(ExportError) as err:
        write_onnx(DataDependent().eval(), tmp_path / "model.onnx", torch.randn(2, 3, 8, 8),
                   "data_dependent_net")
    text = str(err.value)
    assert text.startswith("data_dependent_net: cannot be exported to ONNX (")
    assert "data-dependent" in text and "\n" not in text and len(text) < 300
    assert not (tmp_path / "model.onnx").exists()


def test_a_missing_export_extra_says_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    from fgvc.inference.onnx_model import OnnxModel

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ExportError) as err:
        OnnxModel(tmp_path / "model.onnx")
    assert str(err.value) == ("running an ONNX export needs onnxruntime, which is not installed: "
                              "pip install 'fgvc[export]' (onnx, onnxruntime, onnxscript)")


def test_predict_refuses_other_crops_and_resolutions(tmp_path):
    from fgvc.inference.exported import predict_exported

    folder = write_folder(tmp_path / "export")
    with pytest.raises(ExportError, match=r"exported at 32 px and predicts at that resolution"):
        predict_exported(folder, tmp_path, resolutions=[64])
    with pytest.raises(ExportError, match=r"crops 'ten_crop': an export predicts with its saved"):
        predict_exported(folder, tmp_path, crops="ten_crop")


def test_fgvc_own_architecture_round_trips_through_a_timm_folder(tmp_path):
    """fgvc's own networks (registered with timm, no weights of their own) are rebuilt from
    config.json's arguments, their position-embedding grid included."""
    from fgvc.models import create_model
    from fgvc.models.config import ModelConfig
    from fgvc.models.export import load_timm_folder, needs_fgvc, timm_architecture, write_timm_folder

    model = create_model(ModelConfig(arch="vit_fgvc_tiny_convstem", img_size=32), 3).eval()
    arch = timm_architecture(model, "vit_fgvc_tiny_convstem")
    assert arch == "vit_fgvc_tiny_convstem" and needs_fgvc(arch)
    write_timm_folder(model, tmp_path, arch=arch, resolution=48, crop_pct=0.875,
                      interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3,
                      label_names=["a", "b", "c"], tag="fgvc_test")
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["architecture"], config["label_names"]) == (arch, ["a", "b", "c"])
    rebuilt = load_timm_folder(tmp_path)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert timm_architecture(torch.nn.Linear(2, 2), "pretrainedmodels:se_resnet50") is None
