"""One image, from its sample path to an 8-bit RGB PIL image; Pillow and numpy only (no torch),
so ``fgvc datasets verify`` shares it with the training loader without importing torch.

Pillow's own ``convert("RGB")`` clips 16-bit values at 255 (a 16-bit PNG comes out nearly
white), ignores the EXIF orientation tag, and only *warns* below twice its pixel limit; this
module scales high bit depths, applies the orientation (``dataset.exif_transpose``) and turns
an image over ``dataset.max_image_pixels`` into a ``BadImage`` that is skipped and counted like
any other unreadable file.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fgvc.errors import FgvcError

PILLOW_MAX_IMAGE_PIXELS = 89_478_485  # Image.MAX_IMAGE_PIXELS as Pillow ships it


class BadImage(FgvcError, ValueError):
    """An image that must not be decoded (over the pixel limit)."""


BAD_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError,
                    Image.DecompressionBombError)


@dataclass(frozen=True)
class DecodeOptions:
    """``max_image_pixels=None`` lifts the limit; ``exif_transpose`` applies EXIF orientation."""

    max_image_pixels: int | None = PILLOW_MAX_IMAGE_PIXELS
    exif_transpose: bool = True


DEFAULT_OPTIONS = DecodeOptions()


def decode_options(dataset_config) -> DecodeOptions:
    """The recipe's ``dataset.max_image_pixels`` and ``dataset.exif_transpose``."""
    return DecodeOptions(dataset_config.max_image_pixels, dataset_config.exif_transpose)


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


def open_rgb(root: Path, rel: str, options: DecodeOptions = DEFAULT_OPTIONS) -> Image.Image:
    """Decode ``root/rel`` fully into 8-bit RGB; raises one of ``BAD_IMAGE_ERRORS``."""
    source = image_bytes_or_path(root, rel)
    with _open(source, options.max_image_pixels) as image:
        image.load()  # a truncated file fails here, not at open()
        if options.exif_transpose:
            image = ImageOps.exif_transpose(image)
        return to_rgb8(image)


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
