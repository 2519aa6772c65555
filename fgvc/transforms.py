"""The FixRes transforms: train DA, test DA and test DA2, normalised per model.

Train DA zooms in on objects (RandomResizedCrop), test DA shows them smaller (resize the shorter
side to K/crop_pct then centre-crop K). That is the apparent-object-size discrepancy of the
paper; stage 2 fixes it by adapting the network to test DA at a higher resolution.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

# Imported here, not on a worker's first image: loader workers are forked from this process, and
# an import there costs every worker of every pass (~14 ms: libjpeg-turbo's binding, the Parquet
# reference parser).
from fgvc.datasets.fast_decode import DEFAULT_OPTIONS, EncodedImage
from fgvc.errors import RecipeError
from fgvc.norms import IMAGENET_MEAN, IMAGENET_STD
from fgvc.suggest import did_you_mean
from fgvc.torch_compat import native_uint8_resize_on_cpu, resized_output_size

Augment = Literal["train", "test", "test2", "train_resize_crop"]
_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class DataConfig:
    """How a model expects its input: taken from its pretrained configuration."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 224 / 256
    input_range: float = 1.0  # 255 for networks trained on 0-255 pixels (Cadene's bninception)
    input_space: str = "RGB"  # or "BGR"

    @property
    def mode(self) -> T.InterpolationMode:
        return _INTERPOLATION[self.interpolation]


def resize_size(resolution: int, crop_pct: float) -> int:
    """Shorter side before the centre crop: int(K * 256/224) for the paper's crop ratio."""
    return int(resolution / crop_pct)


class ShiftedCenterCrop:
    """Test DA2's crop: centred vertically, shifted horizontally at random by up to the margin."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        top = max(0, (height - self.size) // 2)
        margin = max(0, width - self.size)
        left = random.randint(0, margin)
        return F.crop(image, top, left, self.size, self.size)


def to_model_input(tensor: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """A [0, 1] RGB tensor (C, H, W) in the model's channel order, range and normalisation."""
    if cfg.input_space == "BGR":
        tensor = tensor.flip(0)
    if cfg.input_range != 1.0:
        tensor = tensor * cfg.input_range
    return F.normalize(tensor, cfg.mean, cfg.std)


class ToModelInput:
    """PIL image -> normalised tensor, as the model's pretrained configuration asks."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_model_input(F.to_tensor(image), self.cfg)


def _finish(cfg: DataConfig) -> list:
    return [ToModelInput(cfg)]


def train_transform(resolution: int, cfg: DataConfig,
                    crop_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(resolution, scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3),
                            interpolation=cfg.mode),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
        *_finish(cfg),
    ])


def train_resize_crop_transform(resolution: int, cfg: DataConfig) -> T.Compose:
    """The paper's appendix D variant of train DA: shorter side resized as for test DA, then a
    random K x K crop (no scale change), flip and colour jitter."""
    return T.Compose([
        T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
        T.RandomCrop(resolution),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
        *_finish(cfg),
    ])


def test_transform(resolution: int, cfg: DataConfig) -> T.Compose:
    """Deterministic: the same image always gives the same tensor."""
    return T.Compose([
        T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
        T.CenterCrop(resolution),
        *_finish(cfg),
    ])


def test2_transform(resolution: int, cfg: DataConfig) -> T.Compose:
    return T.Compose([
        T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.05, contrast=0.05, saturation=0.05),
        ShiftedCenterCrop(resolution),
        *_finish(cfg),
    ])


_BUILDERS = {"train": train_transform, "test": test_transform, "test2": test2_transform,
             "train_resize_crop": train_resize_crop_transform}


# -- The fast path: what DataLoader workers run ------------------------------------------------
# Workers decode (train DA at reduced scale where the output allows, see
# datasets/fast_decode.py; test DA at full size unless ``dataset.test_decode: reduced``), crop
# and resize, and return uint8 tensors: 4x fewer bytes through shared memory and pinned copies
# than float32. ``DeviceNormalize`` then converts and normalises whole batches on the device.
# The reference transforms above (PIL in, normalised float out) stay the definition: the fast
# path draws the same random numbers in the same order, and tests/test_fast_path.py checks that
# its output matches them (identical where PIL's resize runs, within one level of 255 where
# torch's uint8 resize does, i.e. for bilinear models).


def to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> contiguous (3, H, W) uint8 tensor (crops are then row slices)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class DeviceNormalize:
    """uint8 batch (..., 3, H, W) on the device -> what ``to_model_input`` gives.

    Computed as one multiply and one subtraction per element (x * range / (255 std) - mean /
    std, folded into per-channel constants) instead of four passes; the result equals the
    reference's to float32 rounding (a few 1e-7), not bit for bit.

    On the CPU the output goes into a buffer kept per batch shape and reused by the next batch
    (a fresh allocation of a large batch costs more in page faults than the arithmetic): the
    loops consume each batch before asking for the next."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self._buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8:
            return batch
        cfg = self.cfg
        if cfg.input_space == "BGR":
            batch = batch.flip(-3)
        mean = torch.tensor(cfg.mean, dtype=torch.float64)
        std = torch.tensor(cfg.std, dtype=torch.float64)
        scale = (cfg.input_range / 255.0 / std).float().view(3, 1, 1).to(batch.device)
        shift = (mean / std).float().view(3, 1, 1).to(batch.device)
        # The conversion first, then in-place float arithmetic: on the CPU a mixed
        # uint8 x float32 multiply takes 2.4x as long as the copy plus two float passes (same
        # result: the multiply promotes to float32 first either way).
        if batch.device.type == "cpu":
            key = tuple(batch.shape)
            if key not in self._buffers:
                if len(self._buffers) >= 4:
                    self._buffers.clear()
                self._buffers[key] = torch.empty(key)
            out = self._buffers[key].copy_(batch)
        else:
            out = batch.to(torch.float32)
        return out.mul_(scale).sub_(shift)


def resized_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(width, height) after ``T.Resize(short)`` of an image of ``size`` = (width, height)."""
    height, width = resized_output_size(size[1], size[0], short)
    return width, height


def decode_resized(encoded, shorts: list[int], mode: T.InterpolationMode) -> list[torch.Tensor]:
    """Test DA's resize of ``encoded`` (an ``EncodedImage``): the shorter side to each of
    ``shorts``, (3, h, w) uint8 tensors. The output sizes are computed from the file's own size,
    so they equal the reference path's. Bilinear and bicubic resizes run on the decoded array
    (``resize_uint8``); nearest keeps PIL's resize (torch's nearest picks other pixels).

    Each output's pixels are those of a pass at its size alone, whatever the other sizes: the
    image is decoded at full size, once for all of them, unless the recipe asks for
    ``dataset.test_decode: reduced``, where each output asks for its own reduced decode
    (``EncodedImage.request``) and only outputs with the same request share one. A reduced
    decode is a different low-pass filter from the reference's resize of the full image
    (libjpeg-turbo's scaled inverse DCT), so on fine textures it gives other pixels; nearest
    never takes it (it picks pixels, which a reduced decode would average)."""
    sizes = [resized_size(encoded.size, s) for s in shorts]
    if mode not in TORCH_RESIZE_MODES:
        image = encoded.decode()
        return [to_uint8(image.resize(size, F.pil_modes_mapping[mode])) for size in sizes]
    reduced = encoded.options.test_decode == "reduced"
    decoded: dict[tuple[int, int], torch.Tensor] = {}
    out = []
    for width, height in sizes:
        request = encoded.request(width, height) if reduced else (0, 0)
        if request not in decoded:
            decoded[request] = torch.from_numpy(encoded.decode(*request, array=True)).permute(
                2, 0, 1)
        out.append(resize_uint8(decoded[request], height, width, mode))
    return out


# torch's antialiased kernels are PIL's filters (bicubic with PIL's a = -0.5, not the -0.75 of
# torch's plain bicubic), rounded differently: within one level of 255 (rarely two where a
# bicubic upscale overshoots), mean under 0.1 level, at a quarter to a fifth of PIL's time, and
# without PIL's (H, W, 3) -> (3, H, W) copy.
TORCH_RESIZE_MODES = (T.InterpolationMode.BILINEAR, T.InterpolationMode.BICUBIC)


def resize_uint8(image: torch.Tensor, height: int, width: int,
                 mode: T.InterpolationMode = T.InterpolationMode.BILINEAR) -> torch.Tensor:
    """A (3, H, W) uint8 tensor of any layout (a view of decoded (H, W, 3) pixels, or a crop of
    one) resized by torch's uint8 antialiased kernel (one of ``TORCH_RESIZE_MODES``):
    contiguous (3, height, width).

    Where torch resizes uint8 natively (torchvision's own test), ``interpolate`` is called
    directly: torchvision's ``resize`` reaches the same call with the same arguments (so the
    same pixels) after dispatch and checks whose Python cost is not small beside the kernel's
    fraction of a millisecond on a 224 px crop."""
    if image.device.type == "cpu" and _native_uint8_resize(mode):
        return torch.nn.functional.interpolate(
            image[None], size=(height, width), mode=mode.value, align_corners=False,
            antialias=True)[0].contiguous()
    return F2.resize(image[None], [height, width], interpolation=mode,
                     antialias=True)[0].contiguous()


@functools.cache
def _native_uint8_resize(mode: T.InterpolationMode) -> bool:
    """torchvision's answer (a private function: without it, always its ``resize``;
    ``fgvc/torch_compat.py``)."""
    return mode in TORCH_RESIZE_MODES and native_uint8_resize_on_cpu(mode)


def encoded_image(root: Path, rel: str, options=None):
    """``root/rel`` read for the fast path (``datasets/fast_decode.py``), with the recipe's
    ``DecodeOptions`` (default ones when ``None``)."""
    return EncodedImage(root, rel, options or DEFAULT_OPTIONS)


class TensorColorJitter:
    """torchvision's ``ColorJitter`` (brightness, contrast, saturation; the same parameter draws,
    from ``ColorJitter.get_params``, and the same random order) on a (3, H, W) uint8 tensor,
    converted to float once. Each operation is PIL's blend as torchvision's PIL path runs it
    (``grey + factor * (x - grey)``, truncated to whole levels; the grey image rounded as PIL's
    ``convert("L")``), so the output matches the PIL reference within float rounding of the
    luma weights. Written here because torchvision's tensor jitter converts and rounds around
    each of its operations (twice the time on a 224 px crop, with different rounding) and its
    PIL jitter builds and blends a whole degenerate image per operation."""

    _GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2 luma, as PIL's convert("L")

    def __init__(self, jitter: T.ColorJitter):
        if jitter.hue is not None:
            raise ValueError("TensorColorJitter covers brightness, contrast and saturation only")
        self.jitter = jitter

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        j = self.jitter
        order, b, c, s, _ = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, None)
        factors = (b, c, s)
        steps = [(op, factors[op]) for op in order.tolist()
                 if op < 3 and factors[op] is not None]
        x = image.float()
        for i, (op, factor) in enumerate(steps):
            if op == 0:  # towards black
                x.mul_(factor)
            elif op == 1:  # towards the mean grey level (ImageStat's, rounded)
                mean = float(self._GREY @ x.reshape(3, -1).sum(1)) / (x.shape[1] * x.shape[2])
                x.mul_(factor).add_((1.0 - factor) * int(mean + 0.5))
            else:  # towards the pixel's own grey level
                grey = torch.tensordot(self._GREY, x, dims=1).add_(0.5).floor_()
                x.lerp_(grey, 1.0 - factor)
            # PIL clips and truncates after each blend. A factor <= 1 blends two images of
            # levels in [0, 255] (non-negative weights), so nothing leaves the range and the clip
            # is skipped; the last truncation is the uint8 cast's (towards zero, the floor here).
            if factor > 1:
                x.clamp_(0, 255)
            if i < len(steps) - 1:
                x.floor_()
        # numpy's float-to-uint8 cast is vectorised (a quarter of torch's time on the CPU)
        return torch.from_numpy(x.numpy().astype(np.uint8))


def decoded_grid_box(box: tuple[int, int, int, int], sx: float,
                     sy: float) -> tuple[int, int, int, int]:
    """A crop box (top, left, height, width) of the file's pixels on a decode scaled by
    (``sx``, ``sy``), its edges rounded to the nearest decoded pixel. A reduced decode keeps at
    least the output's pixels across the crop, so an edge moves by at most half a decoded
    pixel, which is at most half an output pixel, and the crop's size by at most one decoded
    pixel (1/K of it); at full size the box is unchanged."""
    top, left, h, w = box
    t, b = round(top * sy), round((top + h) * sy)
    left_, r = round(left * sx), round((left + w) * sx)
    return t, left_, max(b - t, 1), max(r - left_, 1)


class FastTrain:
    """``train_transform`` from a file: the crop is drawn on the header's size, and only as
    many pixels as the crop's output needs are decoded (with libjpeg-turbo's fast IDCT and chroma
    upsampling for a reduced-scale decode, whose differences are far below the augmentation's
    own noise), straight into an array. With bilinear or bicubic interpolation the crop is
    resized by torch's uint8 antialiased kernel on the array's (3, H, W) view
    (``resize_uint8``); torch takes whole-pixel boxes only, so on a reduced decode the crop is
    snapped to the decoded grid (``decoded_grid_box``). Nearest decodes at full size and keeps
    PIL's crop and resize. Flip and colour jitter (``TensorColorJitter``) follow on the uint8 tensor, drawing
    torchvision's random numbers in the reference's order."""

    def __init__(self, resolution: int, cfg: DataConfig,
                 crop_scale: tuple[float, float] = (0.08, 1.0)):
        self.reference = train_transform(resolution, cfg, crop_scale)
        self.crop, self.flip, jitter = self.reference.transforms[:3]
        self.jitter = TensorColorJitter(jitter)
        self.resolution, self.mode = resolution, cfg.mode

    def load(self, root: Path, rel: str, options=None) -> torch.Tensor:
        encoded = encoded_image(root, rel, options)
        width, height = encoded.size
        box = self.crop.get_params(torch.empty(0, height, width), self.crop.scale,
                                   self.crop.ratio)
        top, left, h, w = box
        k = self.resolution
        if self.mode not in TORCH_RESIZE_MODES:  # nearest: the reference's crop and resize
            crop = encoded.decode().crop((left, top, left + w, top + h))
            out = to_uint8(crop.resize((k, k), F.pil_modes_mapping[self.mode]))
            return self.jitter(self.flip(out))
        pixels = encoded.decode(math.ceil(k * width / w), math.ceil(k * height / h), fast=True,
                                array=True)
        sy, sx = pixels.shape[0] / height, pixels.shape[1] / width
        top, left, h, w = decoded_grid_box(box, sx, sy)
        view = torch.from_numpy(pixels).permute(2, 0, 1)[:, top:top + h, left:left + w]
        return self.jitter(self._flipped(resize_uint8(view, k, k, self.mode)))

    def _flipped(self, image: torch.Tensor) -> torch.Tensor:
        """``RandomHorizontalFlip`` with its one draw, without the module call and
        torchvision's dispatch around a flip of a 224 px uint8 image."""
        return image.flip(-1) if torch.rand(1) < self.flip.p else image


class FastTest:
    """``test_transform`` from a file (decode, resize, centre crop: ``decode_resized``)."""

    def __init__(self, resolution: int, cfg: DataConfig):
        self.resolution, self.cfg = resolution, cfg

    def load(self, root: Path, rel: str, options=None) -> torch.Tensor:
        (image,) = decode_resized(encoded_image(root, rel, options),
                                  [resize_size(self.resolution, self.cfg.crop_pct)], self.cfg.mode)
        return F.center_crop(image, [self.resolution]).contiguous()


class DecodedPIL:
    """Any PIL pipeline from a file (full decode), uint8 out: test DA2's random steps."""

    def __init__(self, transform: T.Compose):
        self.transform = transform

    def load(self, root: Path, rel: str, options=None) -> torch.Tensor:
        return to_uint8(self.transform(encoded_image(root, rel, options).decode()))


def loader_transform(augment: Augment, resolution: int, cfg: DataConfig,
                     crop_scale: tuple[float, float] = (0.08, 1.0), *,
                     auto_augment: str | None = None, random_erasing: float = 0.0,
                     albumentations: AlbumentationsStep | None = None):
    """The fast-path equivalent of ``build_transform``: ``.load(root, rel, decode_options)``
    gives a uint8 tensor; the loader's ``DeviceNormalize`` finishes it on the device.
    With timm's ``auto_augment`` or ``random_erasing`` (which acts on the normalised tensor)
    the reference pipeline runs in full in the workers and its float output passes through
    ``DeviceNormalize`` untouched. An ``albumentations`` step after the crop follows the fast
    path's uint8 output; one before the crop needs the whole decoded image (the PIL path)."""
    if auto_augment or random_erasing:
        return build_transform(augment, resolution, cfg, crop_scale, auto_augment=auto_augment,
                               random_erasing=random_erasing, albumentations=albumentations)
    if albumentations is not None and albumentations.before_crop:
        reference = build_transform(augment, resolution, cfg, crop_scale,
                                    albumentations=albumentations)
        return DecodedPIL(T.Compose(reference.transforms[:-1]))
    if albumentations is not None:
        return AfterLoad(loader_transform(augment, resolution, cfg, crop_scale), albumentations)
    if augment == "train":
        return FastTrain(resolution, cfg, crop_scale)
    if augment == "test":
        return FastTest(resolution, cfg)
    reference = build_transform(augment, resolution, cfg, crop_scale)
    return DecodedPIL(T.Compose(reference.transforms[:-1]))


def build_transform(augment: Augment, resolution: int, cfg: DataConfig,
                    crop_scale: tuple[float, float] = (0.08, 1.0), *,
                    auto_augment: str | None = None, random_erasing: float = 0.0,
                    albumentations: AlbumentationsStep | None = None) -> T.Compose:
    """``crop_scale`` is RandomResizedCrop's area range; only train DA uses it.
    ``auto_augment`` (a timm string) acts on the image before normalisation,
    ``random_erasing`` (a probability) on the normalised tensor, ``albumentations`` before
    fgvc's crop or after its DA (``with_albumentations``), before timm's."""
    if augment not in _BUILDERS:
        raise ValueError(f"unknown augment {augment!r} (known: {', '.join(_BUILDERS)})")
    if augment == "train":
        pipeline = train_transform(resolution, cfg, crop_scale)
    else:
        pipeline = _BUILDERS[augment](resolution, cfg)
    if albumentations is not None:
        pipeline = with_albumentations(pipeline, albumentations)
    if auto_augment or random_erasing:
        pipeline = add_timm_augmentation(pipeline, resolution, cfg, auto_augment, random_erasing)
    return pipeline


def add_timm_augmentation(pipeline: T.Compose, resolution: int, cfg: DataConfig,
                          auto_augment: str | None, random_erasing: float) -> T.Compose:
    """timm's RandAugment / AugMix / AutoAugment (chosen by the string's first word, as timm's
    ``create_transform`` does) just before the normalisation, and timm's per-pixel
    RandomErasing after it."""
    from timm.data import auto_augment as aa
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import str_to_pil_interp

    ops = list(pipeline.transforms)
    if auto_augment:
        params = {"translate_const": int(resolution * 0.45),
                  "img_mean": tuple(min(255, round(255 * m)) for m in cfg.mean),
                  "interpolation": str_to_pil_interp(cfg.interpolation)}
        make = (aa.rand_augment_transform if auto_augment.startswith("rand") else
                aa.augment_and_mix_transform if auto_augment.startswith("augmix") else
                aa.auto_augment_transform)
        try:
            op = make(auto_augment, params)
        except (AssertionError, ValueError, KeyError, IndexError) as err:
            raise RecipeError(f"auto_augment: timm cannot read {auto_augment!r} "
                              f"({type(err).__name__}: {err})") from None
        ops.insert(len(ops) - 1, op)  # the last op is ToModelInput
    if random_erasing:
        ops.append(RandomErasing(probability=random_erasing, mode="pixel", device="cpu"))
    return T.Compose(ops)


# -- Albumentations pipelines (a stage's ``albumentations`` block) ------------------------------
# The pipeline is albumentations' own (``A.from_dict`` / ``A.load``), applied on uint8 HWC
# arrays as it expects, either after fgvc's train or test DA (the crop that sets the apparent
# object size stays fgvc's) or on the decoded image before it. albumentations is imported only
# when a recipe has the block: the import costs a second or more.

ALBUMENTATIONS_INSTALL = "pip install 'fgvc[albumentations]'"
_UNKNOWN_ARGUMENT = re.compile(r"Argument\(s\) '(.*)' are not valid for transform")
# albumentations' modules of the transforms that crop or resize: after one of them the object
# size in the image is no longer the one fgvc's crop sets (FixRes' train/test discrepancy).
_SIZE_MODULES = (".crops.transforms", ".geometric.resize")


def _albumentations():
    """The library, or one line saying how to install it."""
    # albumentations checks PyPI for a newer release on import unless told not to: a run must
    # not reach the network (and loader workers would each try).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations
    except ImportError:
        raise RecipeError("albumentations: the recipe uses an albumentations pipeline but the "
                          f"library is not installed; install it with {ALBUMENTATIONS_INSTALL}"
                          ) from None
    return albumentations


def _leaves(node: dict) -> list[dict]:
    """The serialised transforms of a pipeline that hold no others, in order."""
    inner = node.get("transforms")
    if not isinstance(inner, list):
        return [node]
    return [leaf for child in inner if isinstance(child, dict) for leaf in _leaves(child)]


def _short(err: Exception) -> str:
    """albumentations' error in one line: pydantic's field and message, a missing name."""
    if isinstance(err, KeyError):
        from albumentations.core.serialization import SERIALIZABLE_REGISTRY

        name = err.args[0] if err.args else ""
        return (f"unknown transform {name!r}{did_you_mean(name, SERIALIZABLE_REGISTRY)}"
                if name not in SERIALIZABLE_REGISTRY else f"missing key {name!r}")
    lines = [ln.strip() for ln in str(err).splitlines()
             if ln.strip() and "errors.pydantic.dev" not in ln and "validation error" not in ln]
    return re.sub(r"\s*\[type=[^\]]*\]", "", ": ".join(lines[:2])) or type(err).__name__


def _from_dict(A, data: dict, where: str):
    """``A.from_dict`` with its failures as one line naming the transform; an argument
    albumentations would only warn about and drop is refused, since the recipe asked for it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            built = A.from_dict(data)
        except Exception as err:  # noqa: BLE001  KeyError, ValueError (pydantic), TypeError...
            name = next((leaf.get("__class_fullname__") for leaf in _leaves(data["transform"])
                         if not _builds(A, leaf)), None)
            raise RecipeError(f"{where}: albumentations cannot build "
                              f"{name or 'the pipeline'}: {_short(err)}") from None
    for warning in caught:
        bad = _UNKNOWN_ARGUMENT.search(str(warning.message))
        if bad:
            name = next((leaf.get("__class_fullname__") for leaf in _leaves(data["transform"])
                         if bad.group(1).split("', '")[0] in leaf), "a transform")
            raise RecipeError(f"{where}: {name} has no argument(s) {bad.group(1)}")
    return built


def _builds(A, leaf: dict) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            A.from_dict({"transform": leaf})
        except Exception:  # noqa: BLE001  any failure: this is the transform to name
            return False
    return True


def _pipeline_dict(pipeline: dict | str, where: str) -> dict:
    """The serialised pipeline: inline, or read from a file written by ``A.save`` (JSON, or
    YAML by its suffix); a bare transform is accepted without ``A.to_dict``'s wrapper."""
    if isinstance(pipeline, str):
        path = Path(pipeline)
        try:
            text = path.read_text()
        except OSError as err:
            raise RecipeError(f"{where}: cannot read the pipeline file {pipeline!r} "
                              f"({err.strerror or err}); expected a file written by "
                              "albumentations' A.save") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                pipeline = yaml.safe_load(text)
            else:
                pipeline = json.loads(text)
        except ValueError as err:  # json's and yaml's parse errors both derive from it
            raise RecipeError(f"{where}: {pipeline!r} is not a readable pipeline file "
                              f"({str(err).splitlines()[0]})") from None
    if isinstance(pipeline, dict) and "__class_fullname__" in pipeline:
        pipeline = {"transform": pipeline}
    if not (isinstance(pipeline, dict) and isinstance(pipeline.get("transform"), dict)
            and "__class_fullname__" in pipeline["transform"]):
        raise RecipeError(f"{where}: expected albumentations' serialised form (A.to_dict: "
                          "{transform: {__class_fullname__: Compose, transforms: [...]}}), got "
                          f"{type(pipeline).__name__}")
    return pipeline


class AlbumentationsStep:
    """A recipe's albumentations pipeline on one image. Each call reseeds the pipeline with
    albumentations' own ``set_random_seed`` from one draw of torch's generator, which
    ``BatchSeeded`` (engine/data.py) seeds per batch: a sample's augmentation is then a
    function of its batch alone, whichever worker loads it and whether or not the run was
    resumed."""

    def __init__(self, compose, before_crop: bool):
        self.compose, self.before_crop = compose, before_crop

    def array(self, image: np.ndarray) -> np.ndarray:
        self.compose.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        return np.ascontiguousarray(self.compose(image=image)["image"])

    def __call__(self, image: Image.Image) -> Image.Image:
        return Image.fromarray(self.array(np.asarray(image.convert("RGB"))))

    def tensor(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 -> the same after the pipeline (HWC for albumentations)."""
        out = self.array(image.permute(1, 2, 0).numpy())
        return torch.from_numpy(out).permute(2, 0, 1).contiguous()

    def size_changing(self) -> list[str]:
        """The pipeline's transforms that crop or resize."""
        found, stack = [], [self.compose]
        while stack:
            node = stack.pop(0)
            stack[:0] = list(getattr(node, "transforms", []))
            if type(node).__module__.endswith(_SIZE_MODULES):
                found.append(type(node).__name__)
        return found


def albumentations_step(pipeline: dict | str, position: str, resolution: int,
                        where: str = "albumentations") -> AlbumentationsStep:
    """The recipe's pipeline built and tried once on a blank ``resolution`` square, so a
    transform that fails on an image, or (after fgvc's crop) one that changes the crop's size
    and would break the batch, is one line before any worker starts."""
    A = _albumentations()
    compose = _from_dict(A, _pipeline_dict(pipeline, f"{where}.pipeline"), f"{where}.pipeline")
    if not isinstance(compose, A.BaseCompose):
        compose = A.Compose([compose])
    step = AlbumentationsStep(compose, before_crop=position == "before_crop")
    probe = np.zeros((resolution, resolution, 3), np.uint8)
    try:
        shape = step.array(probe).shape
    except Exception as err:  # noqa: BLE001  albumentations' own failure, shortened
        raise RecipeError(f"{where}.pipeline: fails on a {resolution} px RGB image: "
                          f"{_short(err)}") from None
    if not step.before_crop and shape != probe.shape:
        names = ", ".join(step.size_changing()) or "a transform"
        raise RecipeError(f"{where}.pipeline: {names} turns fgvc's {resolution} x {resolution} "
                          f"crop into {shape[1]} x {shape[0]}; after the crop the pipeline must "
                          "keep the size (or set position: before_crop)")
    return step


def albumentations_warnings(step: AlbumentationsStep) -> list[str]:
    """Allowed but against FixRes: a crop or resize inside the pipeline."""
    return [f"albumentations transform {name} crops or resizes: it changes the apparent object "
            "size that fgvc's crop sets (FixRes' train/test discrepancy)"
            for name in step.size_changing()]


class AfterLoad:
    """A fast-path transform (``.load`` -> uint8 tensor) followed by an albumentations step."""

    def __init__(self, inner, step: AlbumentationsStep):
        self.inner, self.step = inner, step

    def load(self, root: Path, rel: str, options=None) -> torch.Tensor:
        return self.step.tensor(self.inner.load(root, rel, options))


def with_albumentations(pipeline: T.Compose, step: AlbumentationsStep) -> T.Compose:
    """A reference pipeline (PIL in, ``ToModelInput`` last) with the step first (before the
    crop) or just before the normalisation."""
    ops = list(pipeline.transforms)
    ops.insert(0 if step.before_crop else len(ops) - 1, step)
    return T.Compose(ops)
