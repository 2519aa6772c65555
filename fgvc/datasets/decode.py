"""One image, from its sample path to an 8-bit RGB PIL image; Pillow and numpy only (no torch),
so ``fgvc datasets verify`` shares it with the training loader without importing torch.

Pillow's own ``convert("RGB")`` clips 16-bit values at 255 (a 16-bit PNG comes out nearly
white), ignores the EXIF orientation tag, and only *warns* below twice its pixel limit; this
module scales high bit depths, applies the orientation (``dataset.exif_transpose``) and turns
an image over ``dataset.max_image_pixels`` into a ``BadImage`` that is skipped and counted like
any other unreadable file.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fgvc.errors import FgvcError
from fgvc.io.atomic import cause

PILLOW_MAX_IMAGE_PIXELS = 89_478_485  # Image.MAX_IMAGE_PIXELS as Pillow ships it


class BadImage(FgvcError, ValueError):
    """An image that must not be decoded (over the pixel limit)."""


class UnreadableImage(FgvcError, OSError):
    """A decoder failed on one file with an error outside ``BAD_IMAGE_ERRORS`` (a Pillow
    plugin's ``NotImplementedError`` for a variant it cannot decode, an ``IndexError`` in a
    damaged header, ...); the message names the original error."""


# What a per-file handler catches (skip and count, or name the file): every failure of the
# decoders below arrives as one of these (``per_file``).
BAD_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError,
                    Image.DecompressionBombError)


def per_file(decoder):
    """``decoder`` with any error it raises for one file turned into one of
    ``BAD_IMAGE_ERRORS``: Pillow's plugins raise whatever their parsing hits in a damaged or
    unsupported file (a DDS or BLP variant saved under a ``.png`` name raises
    ``NotImplementedError``), and one such file must be skipped and counted like any other
    unreadable one, never stop a run. What is not the file's passes through: ``MemoryError``,
    and the stops (``KeyboardInterrupt``, ``Preempted``), which derive from ``BaseException``."""

    @functools.wraps(decoder)
    def wrapper(*args, **kwargs):
        try:
            return decoder(*args, **kwargs)
        except (*BAD_IMAGE_ERRORS, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure is the file's (docstring)
            raise UnreadableImage(f"{type(err).__name__} from the decoder: "
                                  f"{failure_reason(err)}") from err

    return wrapper


def failure_reason(err: BaseException) -> str:
    """Why a file could not be decoded, in one line: the error's first line (its type when it
    has no message), without the path Pillow repeats in ``cannot identify image file``, and
    an OS error by its cause alone (``no such file or directory``)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if text.startswith("cannot identify image file"):
        return "cannot identify image file"
    return cause(err) if isinstance(err, OSError) and err.errno is not None else text


@dataclass(frozen=True)
class DecodeOptions:
    """``max_image_pixels=None`` lifts the limit; ``exif_transpose`` applies EXIF orientation;
    ``test_decode="reduced"`` lets test DA's fast path decode JPEGs at libjpeg-turbo's reduced
    scales (``fgvc/transforms.py``, ``decode_resized``), which is not the paper's test DA;
    ``follow_symlinks_outside`` lets a sample's file be a link that leads out of the dataset
    root (``integrity.check_inside_root``, applied where a dataset's samples are read)."""

    max_image_pixels: int | None = PILLOW_MAX_IMAGE_PIXELS
    exif_transpose: bool = True
    test_decode: Literal["exact", "reduced"] = "exact"
    follow_symlinks_outside: bool = False


DEFAULT_OPTIONS = DecodeOptions()


def decode_options(dataset_config) -> DecodeOptions:
    """The recipe's ``dataset.max_image_pixels``, ``exif_transpose``, ``test_decode`` and
    ``follow_symlinks_outside``."""
    return DecodeOptions(dataset_config.max_image_pixels, dataset_config.exif_transpose,
                         dataset_config.test_decode, dataset_config.follow_symlinks_outside)


@per_file
def image_bytes_or_path(root: Path, rel: str) -> Path | io.BytesIO:
    """A file path, or the encoded bytes of an image stored inside a Parquet/Arrow file
    (``<file>#<column>[<row>]``, see ``fgvc.datasets.parquet``)."""
    if "#" not in rel:  # an ordinary file: no import of the Parquet reader in a worker
        return root / rel
    from fgvc.datasets.parquet import parse_reference, read_image_bytes

    ref = parse_reference(rel)
    if ref is None:
        return root / rel
    return io.BytesIO(read_image_bytes(root, ref))


def exists(root: Path, rel: str) -> bool:
    """Whether the file holding the image is there (for Parquet rows: the Parquet file)."""
    if "#" in rel:
        from fgvc.datasets.parquet import parse_reference

        ref = parse_reference(rel)
        rel = ref.file if ref else rel
    return os.path.isfile(os.path.join(root, rel))


@per_file
def open_rgb(root: Path, rel: str, options: DecodeOptions = DEFAULT_OPTIONS) -> Image.Image:
    """Decode ``root/rel`` fully into 8-bit RGB; raises one of ``BAD_IMAGE_ERRORS``."""
    source = image_bytes_or_path(root, rel)
    with _open(source, options.max_image_pixels) as image:
        image.load()  # a truncated file fails here, not at open()
        if options.exif_transpose:
            image = ImageOps.exif_transpose(image)
        return to_rgb8(image)


@per_file
def _open(source: Path | io.BytesIO, limit: int | None) -> Image.Image:
    """``Image.open`` with the recipe's pixel limit in place of Pillow's: Pillow's own check
    (a warning over its limit, an error over twice that) is silenced, or lifted for this call
    when the recipe allows more; images over ``limit`` raise ``BadImage`` before decoding."""
    saved = Image.MAX_IMAGE_PIXELS
    lift = saved is not None and (limit is None or limit > saved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if lift:
            Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(source)
        finally:
            if lift:
                Image.MAX_IMAGE_PIXELS = saved
    try:
        check_pixel_limit(*image.size, limit)
    except BadImage:
        image.close()
        raise
    return image


def check_pixel_limit(width: int, height: int, limit: int | None) -> None:
    """Raise ``BadImage`` for an image over ``dataset.max_image_pixels`` (``None``: no limit)."""
    if limit is not None and width * height > limit:
        raise BadImage(f"{width}x{height} = {width * height:,} pixels is over "
                       f"dataset.max_image_pixels = {limit:,} (a decompression bomb?)")


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any mode to 8-bit RGB, scaling high-bit-depth modes to 0..255 instead of clipping.

    ``I;16*`` (16-bit grey) is scaled by 255/65535; ``I`` (32-bit integers, how Pillow opens most
    16-bit greyscale files) by the bit depth its maximum needs (8, 16 or 32 bits); ``F`` (float)
    by 255 when its values lie in [0, 1], else by its 16-bit range.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            full = 65535.0
        elif mode == "F" and values.size and values.max() <= 1.0:
            full = 1.0
        else:
            peak = float(values.max()) if values.size else 0.0
            full = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else 4294967295.0
        grey = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")
