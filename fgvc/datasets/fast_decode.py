"""The fast decode path: JPEGs decoded by libjpeg-turbo (``simplejpeg``) straight from the file's
bytes, at a reduced scale when the transform's output needs far fewer pixels.

libjpeg-turbo can decode a JPEG directly at 1/2, 1/4 or 1/8 of its size (and M/8 steps in
between) by scaling the inverse DCT, which costs a fraction of a full decode followed by a
resize. A transform first reads the image's size from its header (``EncodedImage.size``), draws
its crop, and asks for the smallest decode that still gives at least as many pixels as its
output (``decode(min_width, min_height)``); the reduction is only used when it is at least 2x,
since libjpeg-turbo's factors between 1 and 2 are not faster than a full decode. Train DA
does; test DA decodes the full image unless the recipe says ``dataset.test_decode: reduced``
(a scaled inverse DCT is another low-pass filter than the reference's resize: other pixels).

Anything that is not a plain baseline RGB or greyscale JPEG without a rotation (PNG,
CMYK, 16-bit, rotated photos when ``dataset.exif_transpose`` is on, unreadable data) goes
through ``decode.open_rgb``, the reference decode path, so every image keeps its handling.

The header of a plain JPEG is read by libjpeg-turbo (``simplejpeg.decode_jpeg_header``, ~2 us)
after a walk over the file's marker segments that looks for an orientation (``has_orientation``:
EXIF, or an XMP packet's ``tiff:Orientation``, both of which ``ImageOps.exif_transpose``
applies), instead of by Pillow (~30 us, and ~140 us per image with ``Path.read_bytes``, a tenth
of a 500x375 training sample's whole time); a JPEG with either still has its orientation read
by Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fgvc.datasets.decode import (
    DEFAULT_OPTIONS,
    DecodeOptions,
    _open,
    check_pixel_limit,
    image_bytes_or_path,
    open_rgb,
)

try:  # optional at import time: without it every image takes the reference path
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency
    simplejpeg = None

_ORIENTATION = 0x0112
MIN_REDUCTION = 2.0  # libjpeg-turbo's scaled decode only pays off from a factor 2 on


class EncodedImage:
    """An image file (or Parquet cell) read into memory, its size known before decoding.

    The header is checked against ``decode.py``'s pixel limit (``dataset.max_image_pixels``), so
    an over-large image is refused before any decoding, as on the reference path."""

    def __init__(self, root: Path, rel: str, options: DecodeOptions = DEFAULT_OPTIONS):
        self.root, self.rel, self.options = Path(root), rel, options
        self.path = self.root / rel
        source = image_bytes_or_path(self.root, rel)
        if isinstance(source, io.BytesIO):
            self.data = source.getvalue()
        else:
            with open(source, "rb") as file:  # a third of Path.read_bytes's time
                self.data = file.read()
        self._decoded = None
        self._header = None  # Pillow's opened header, when Pillow read it
        quick = plain_jpeg_size(self.data, options)
        if quick is not None:
            self.size: tuple[int, int] = quick
            self.fast = True
            return
        header = _open(io.BytesIO(self.data), options.max_image_pixels)
        self.size = header.size  # (width, height)
        upright = (not options.exif_transpose
                   or header.getexif().get(_ORIENTATION, 1) == 1)
        self.fast = (simplejpeg is not None and header.format == "JPEG"
                     and header.mode in ("RGB", "L") and upright)
        # A full-size decode goes through the opened header (Pillow's libjpeg-turbo: as fast
        # as simplejpeg's and straight into a PIL image, no array copy).
        if self.fast:
            self._header = header
            return
        header.close()
        # decoded now, so ``size`` is the reference decode's (e.g. rotated)
        self._decoded = open_rgb(self.root, self.rel, self.options)
        self.size = self._decoded.size

    def decode(self, min_width: int = 0, min_height: int = 0, fast: bool = False,
               array: bool = False) -> Image.Image | np.ndarray:
        """RGB image at least ``min_width`` x ``min_height`` (or full size), possibly smaller
        than the file's own size; ``image.size[0] / self.size[0]`` is the scale. ``fast``: the
        fastest IDCT and chroma upsampling for a reduced-scale decode (training augmentation; a
        full-size decode stays exact). ``array``: an (H, W, 3) uint8 array instead of a PIL
        image, for transforms that continue on tensors; a baseline JPEG then goes straight from
        libjpeg-turbo into it (no PIL image, whose RGB is four bytes per pixel)."""
        if self.fast:
            small = self.request(min_width, min_height) != (0, 0)
            if not small and not array:
                header, self._header = self._header, None  # in memory: nothing to close
                if header is None:
                    header = _open(io.BytesIO(self.data), self.options.max_image_pixels)
                header.load()  # a truncated file fails here, as on the reference path
                return header if header.mode == "RGB" else header.convert("RGB")
            try:
                pixels = simplejpeg.decode_jpeg(self.data, colorspace="RGB",
                                                fastdct=fast and small,
                                                fastupsample=fast and small,
                                                min_width=min_width if small else 0,
                                                min_height=min_height if small else 0)
                return pixels if array else Image.fromarray(pixels)
            except ValueError:
                pass  # e.g. a progressive JPEG libjpeg-turbo refuses in strict mode
        image = self._decoded if self._decoded is not None else open_rgb(self.root, self.rel,
                                                                         self.options)
        return np.array(image) if array else image

    def request(self, min_width: int, min_height: int) -> tuple[int, int]:
        """The decode that ``decode(min_width, min_height)`` makes: the same request when it
        decodes at reduced scale, ``(0, 0)`` when it decodes the full image. Equal requests
        give equal pixels, so callers that need several sizes share a decode only between
        equal requests."""
        width, height = self.size
        reduction = min(width / max(min_width, 1), height / max(min_height, 1))
        return (min_width, min_height) if self.fast and reduction >= MIN_REDUCTION else (0, 0)


_JPEG_COLOURS = ("YCbCr", "RGB", "Gray")  # what Pillow opens as RGB or L


def plain_jpeg_size(data: bytes, options: DecodeOptions) -> tuple[int, int] | None:
    """(width, height) of a JPEG the fast path decodes as it is (RGB or grey, and without EXIF
    when orientations are applied), read without Pillow; ``None`` for anything else, which
    then goes through Pillow's header. Raises ``BadImage`` over the pixel limit, as Pillow's
    path does."""
    if simplejpeg is None or not data.startswith(b"\xff\xd8"):
        return None
    if options.exif_transpose and has_orientation(data):
        return None
    try:
        height, width, colours, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colours not in _JPEG_COLOURS:
        return None
    check_pixel_limit(width, height, options.max_image_pixels)
    return width, height


_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"  # the APP1 packet Pillow reads as info["xmp"]


def has_orientation(data: bytes) -> bool:
    """Whether a JPEG may carry an orientation Pillow applies: an EXIF segment (APP1 starting
    ``Exif\\0\\0``) or an XMP packet naming ``tiff:Orientation`` (Pillow's ``getexif`` takes
    the orientation from XMP when EXIF has none) before its image data. Walks the marker
    segments from the start of the file to the first scan; anything it cannot follow counts as
    an orientation, so that Pillow reads the file."""
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return True
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: none before the pixels
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        end_of_segment = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xE1 and (data.startswith(_EXIF, i + 4) or (
                data.startswith(_XMP, i + 4)
                and data.find(b"tiff:Orientation", i + 4, end_of_segment) >= 0)):
            return True
        i = end_of_segment
    return True
