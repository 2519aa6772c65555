"""An exported model's folder (``fgvc export``) and predicting with it.

The folder holds the model file (``model.onnx``; ``model.pt2`` or ``model.ts``;
``model.safetensors`` with timm's ``config.json``), ``preprocess.json`` (how an image becomes
the model's input: fgvc's test DA at the exported resolution, and which file and format the
model is), ``classes.json`` (output index -> category id -> name) and a ``README.md`` card.

The preprocessing is applied here with Pillow and numpy only, so that serving an ONNX export
needs neither torch nor fgvc's transforms; it reproduces ``fgvc.transforms.test_transform``
(torchvision's PIL path: Pillow's resize of the shorter side, torchvision's centre-crop
rounding, ``to_tensor`` and ``normalize`` in float32) value for value, which
``tests/test_export.py`` checks. Image listing, decoding and the unreadable-file message are
``image_files.py``'s, shared with ``fgvc predict RUN --images``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fgvc.datasets.decode import PILLOW_MAX_IMAGE_PIXELS, DecodeOptions
from fgvc.errors import ExportError

EXPORT_FORMATS = ("onnx", "torchscript", "timm")
PREPROCESS, CLASSES, CARD = "preprocess.json", "classes.json", "README.md"
RECIPE_COPY = "fgvc-recipe.yaml"  # not recipe.yaml: an export folder is not a run folder
# The model files each format may write (torchscript: a torch.export program, or a TorchScript
# trace where torch.export cannot capture the network).
MODEL_FILES = {"onnx": ("model.onnx",), "torchscript": ("model.pt2", "model.ts"),
               "timm": ("model.safetensors",)}
LAYOUT_VERSION = 1
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # Pillow's filters of the same names
INPUT_SPACES = ("RGB", "BGR")
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class Preprocess:
    """fgvc's test DA at one resolution, as plain numbers: decode to 8-bit RGB, resize the
    shorter side to ``resize`` (the longer to ``int(resize * long / short)``), centre-crop
    ``crop`` x ``crop``, scale to [0, 1], swap to BGR where ``input_space`` says so, multiply by
    ``input_range``, subtract ``mean`` and divide by ``std`` per channel; NCHW float32."""

    crop: int
    resize: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_range: float = 1.0
    input_space: str = "RGB"
    exif_transpose: bool = True
    max_image_pixels: int | None = PILLOW_MAX_IMAGE_PIXELS

    @property
    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(self.max_image_pixels, self.exif_transpose)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize: ``T.Resize``'s documented rule (shorter side to
        ``resize``, the longer truncated)."""
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pillow's (left, top, right, bottom) of the centre crop, rounded as torchvision's
        ``center_crop`` rounds."""
        top = int(round((height - self.crop) / 2.0))
        left = int(round((width - self.crop) / 2.0))
        return left, top, left + self.crop, top + self.crop

    def pixels(self, image: Any) -> np.ndarray:
        """An RGB Pillow image resized and cropped: (crop, crop, 3) uint8."""
        from PIL import Image

        filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                   "nearest": Image.Resampling.NEAREST}
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, filters[self.interpolation])
        return np.asarray(image.crop(self.crop_box(*size)), dtype=np.uint8)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32, in torchvision's order of float32 steps."""
        x = pixels.astype(np.float32) / np.float32(255)
        if self.input_space == "BGR":
            x = x[..., ::-1]
        if self.input_range != 1.0:
            x = x * np.float32(self.input_range)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, image: Any) -> np.ndarray:
        return self.normalize(self.pixels(image))

    def to_json(self) -> dict[str, Any]:
        return {
            "resize": self.resize, "crop": self.crop, "interpolation": self.interpolation,
            "mean": list(self.mean), "std": list(self.std), "input_range": self.input_range,
            "input_space": self.input_space,
            "decode": {"exif_transpose": self.exif_transpose,
                       "max_image_pixels": self.max_image_pixels},
            "layout": "NCHW float32",
            "steps": [
                "decode to 8-bit RGB" + (" (EXIF orientation applied)" if self.exif_transpose
                                         else ""),
                f"resize the shorter side to {self.resize} px ({self.interpolation}, Pillow), "
                f"the longer to int({self.resize} * long / short)",
                f"centre crop {self.crop} x {self.crop} (offsets round((side - {self.crop}) / 2))",
                "scale to [0, 1] (pixels / 255)"
                + (", channels to BGR" if self.input_space == "BGR" else "")
                + (f", times {self.input_range:g}" if self.input_range != 1.0 else ""),
                "subtract mean, divide by std, per channel",
            ],
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> Preprocess:
        """Read ``preprocess.json``'s numbers back, naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise ExportError(f"{source}: expected a JSON object")

        def field(name: str, ok: Callable[[Any], bool], expected: str, node: dict = data) -> Any:
            value = node.get(name)
            if not ok(value):
                raise ExportError(f"{source}: field {name!r}: expected {expected}, got {value!r}")
            return value

        def positive_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def triple(positive: bool) -> Callable[[Any], bool]:
            return lambda v: (isinstance(v, list) and len(v) == 3 and all(map(number, v))
                              and (not positive or all(x > 0 for x in v)))

        crop = field("crop", positive_int, "a whole number of pixels >= 1")
        resize = field("resize", lambda v: positive_int(v) and v >= crop,
                       f"a whole number of pixels >= crop ({crop})")
        decode = field("decode", lambda v: isinstance(v, dict), "an object")
        limit = field("max_image_pixels", lambda v: v is None or positive_int(v),
                      "a whole number or null", decode)
        return cls(
            crop=crop, resize=resize,
            interpolation=field("interpolation", lambda v: v in INTERPOLATIONS,
                                f"one of {', '.join(INTERPOLATIONS)}"),
            mean=tuple(field("mean", triple(False), "3 numbers")),
            std=tuple(field("std", triple(True), "3 positive numbers")),
            input_range=float(field("input_range", lambda v: number(v) and v > 0,
                                    "a positive number")),
            input_space=field("input_space", lambda v: v in INPUT_SPACES,
                              f"one of {', '.join(INPUT_SPACES)}"),
            exif_transpose=field("exif_transpose", lambda v: isinstance(v, bool), "true or false",
                                 decode),
            max_image_pixels=limit)


def classes_json(class_ids: Sequence[str], class_names: Sequence[str]) -> dict[str, Any]:
    """``classes.json``: the model's output index -> the dataset's category id -> its name."""
    return {"num_classes": len(class_ids),
            "classes": [{"index": i, "category_id": str(c), "name": str(n)}
                        for i, (c, n) in enumerate(zip(class_ids, class_names, strict=True))]}


def _read_classes(path: Path) -> tuple[list[str], list[str]]:
    data = _read_json(path)
    rows = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ExportError(f"{path}: expected {{\"classes\": [{{\"index\", \"category_id\", "
                          "\"name\"}, ...]}")
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and row.get("index") == i and "category_id" in row
                and "name" in row):
            raise ExportError(f"{path}: classes[{i}]: expected {{\"index\": {i}, "
                              f"\"category_id\": ..., \"name\": ...}}, got {row!r}")
    return [str(r["category_id"]) for r in rows], [str(r["name"]) for r in rows]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (an `fgvc export` folder has {PREPROCESS}, "
                          f"{CLASSES} and the model file)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None


def model_file(folder: Path) -> Path | None:
    """The model file ``preprocess.json`` names, where it names one that exists."""
    try:
        entry = json.loads((folder / PREPROCESS).read_text(encoding="utf-8"))["model"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = folder / str(entry)
    return path if path.is_file() else None


def is_export_folder(path: str | Path) -> bool:
    """A folder ``fgvc export`` wrote: its ``preprocess.json`` and the model file it names."""
    folder = Path(path)
    return folder.is_dir() and model_file(folder) is not None


@dataclass(frozen=True)
class ExportFolder:
    """An export folder read back: its preprocessing, its model's description (``format``,
    ``file``, ``architecture``, ``resolution``...) and its classes."""

    path: Path
    preprocess: Preprocess
    model: dict[str, Any]
    class_ids: list[str]
    class_names: list[str]

    @property
    def format(self) -> str:
        return str(self.model["format"])

    @property
    def model_path(self) -> Path:
        return self.path / str(self.model["file"])

    @property
    def resolution(self) -> int:
        return self.preprocess.crop

    @classmethod
    def open(cls, path: str | Path) -> ExportFolder:
        folder = Path(path)
        if not folder.is_dir():
            raise ExportError(f"{folder}: no such export folder")
        source = folder / PREPROCESS
        data = _read_json(source)
        preprocess = Preprocess.from_json(data, str(source))
        model = data.get("model")
        fmt = model.get("format") if isinstance(model, dict) else None
        if fmt not in EXPORT_FORMATS or model.get("file") not in MODEL_FILES[fmt]:
            raise ExportError(f"{source}: field 'model': expected {{\"format\": one of "
                              f"{', '.join(EXPORT_FORMATS)}, \"file\": its model file}}, "
                              f"got {model!r}")
        if not (folder / model["file"]).is_file():
            raise ExportError(f"{folder / model['file']}: missing (named by {source})")
        class_ids, class_names = _read_classes(folder / CLASSES)
        return cls(folder, preprocess, model, class_ids, class_names)


def load_runner(export: ExportFolder, device: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
    """The exported model as ``logits = runner(batch)`` on numpy arrays: ONNX through
    onnxruntime (no torch; ``device`` picks its CUDA provider where it has one), the torch
    formats through torch on the CPU."""
    if export.format == "onnx":
        from fgvc.inference.onnx_model import OnnxModel

        return OnnxModel(export.model_path, device)
    from fgvc.models.export import torch_runner

    return torch_runner(export.path, export.model_path, export.format)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def check_options(export: ExportFolder, resolutions: Sequence[int] | None, crops: str) -> None:
    """An export runs its own test DA: one centre crop at its resolution."""
    if resolutions and list(resolutions) != [export.resolution]:
        raise ExportError(f"resolutions {list(resolutions)}: {export.path} was exported at "
                          f"{export.resolution} px and predicts at that resolution only (export "
                          "the run again with --resolution K for another)")
    if crops != "center":
        raise ExportError(f"crops {crops!r}: an export predicts with its saved test DA, one "
                          "centre crop ('center')")


def predict_exported(path: str | Path, images: Any, *, resolutions: Sequence[int] | None = None,
                     crops: str = "center", batch_size: int = DEFAULT_BATCH,
                     device: str = "auto") -> Any:
    """Class probabilities of ``images`` (files, folders, globs, PIL images, as
    ``fgvc.predict`` takes them) from an export folder, with its saved preprocessing; a file
    that cannot be decoded is left out and named once, as ``fgvc predict --images`` does."""
    from fgvc.inference.image_files import (
        ImageFilesError,
        ImageItems,
        Unreadable,
        describe_unreadable,
        expand_inputs,
        unreadable_message,
    )
    from fgvc.inference.predictions import Predictions

    export = ExportFolder.open(path)
    check_options(export, resolutions, crops)
    items = expand_inputs([images] if isinstance(images, (str, Path)) else images)
    runner = load_runner(export, device)
    dataset = ImageItems(items, export.preprocess, export.preprocess.decode_options)
    rows, probs, unreadable = [], [], []
    ids = [str(item) if isinstance(item, Path) else f"image{i}" for i, item in enumerate(items)]
    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        good = [(array, index) for array, index, _ in batch if array is not None]
        unreadable += [Unreadable(ids[index], reason) for array, index, reason in batch
                       if array is None]
        if good:
            probs.append(softmax(runner(np.stack([a for a, _ in good]))).astype(np.float32))
            rows += [index for _, index in good]
    if not rows:
        raise ImageFilesError(f"none of the {len(items)} image(s) could be read: "
                              f"{describe_unreadable(unreadable)}")
    if unreadable:
        logging.getLogger(__name__).warning(unreadable_message(unreadable, len(items)))
    return Predictions(ids=[ids[i] for i in rows], class_ids=list(export.class_ids),
                       probs=np.concatenate(probs), class_names=list(export.class_names),
                       meta={"export": str(export.path), "format": export.format,
                             "resolutions": [export.resolution], "crops": "center",
                             "average": "probs", "images": len(items),
                             "unreadable": [dataclasses.asdict(u) for u in unreadable]})
