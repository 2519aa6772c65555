"""An orientation stored only in XMP (``tiff:Orientation``, no EXIF orientation) is applied on the
fast path as on the reference path, where Pillow's ``ImageOps.exif_transpose`` reads it (its
``getexif`` takes XMP's orientation when EXIF has none): the same pixels, image by image."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import fgvc.datasets.fast_decode as fast_decode
from fgvc.datasets.decode import DecodeOptions, open_rgb
from fgvc.inference.tta import MultiCrop
from fgvc.transforms import DataConfig, build_transform, loader_transform

UNIT = DataConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
ATTRIBUTE = '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" ' \
            'tiff:Orientation="{}"/>'
ELEMENT = '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/">' \
          '<tiff:Orientation>{}</tiff:Orientation></rdf:Description>'


def xmp_packet(description: str) -> bytes:
    return ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'{description}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def photo_with(path, xmp: bytes | None = None, exif: bytes | None = None, size=(96, 64)):
    """A photo-like JPEG (asymmetric, so every orientation gives other pixels)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BICUBIC)
    extra = {k: v for k, v in (("xmp", xmp), ("exif", exif)) if v is not None}
    image.save(path, quality=92, **extra)
    return path


def reference(path) -> np.ndarray:
    """Pillow's own reading: decode, ``exif_transpose``, RGB."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.mark.parametrize("form", [ATTRIBUTE, ELEMENT])
@pytest.mark.parametrize("orientation", range(2, 9))
def test_xmp_orientation_is_honoured_on_the_fast_path(tmp_path, form, orientation):
    path = photo_with(tmp_path / "xmp.jpg", xmp_packet(form.format(orientation)))
    with Image.open(path) as raw:
        assert "exif" not in raw.info and raw.getexif().get(0x0112) == orientation
        stored = np.asarray(raw.convert("RGB"))
    expected = reference(path)
    assert not np.array_equal(expected, stored)  # the orientation changes the pixels
    encoded = fast_decode.EncodedImage(path.parent, path.name)
    assert encoded.size == (expected.shape[1], expected.shape[0])
    assert np.array_equal(np.asarray(encoded.decode()), expected)
    assert np.array_equal(encoded.decode(array=True), expected)
    assert np.array_equal(np.asarray(open_rgb(path.parent, path.name)), expected)
    # test DA and 10-crop: PIL's nearest resize on both paths, so identical values
    nearest = dataclasses.replace(UNIT, interpolation="nearest")
    image = Image.fromarray(expected)
    fast = loader_transform("test", 32, nearest).load(path.parent, path.name)
    assert torch.equal(fast, (build_transform("test", 32, nearest)(image) * 255).round().byte())
    ten = MultiCrop([32, 40], UNIT, "ten_crop")
    for res, crops in ten.load(path.parent, path.name).items():
        assert (crops.float() - ten(image)[res] * 255).abs().max() <= 1, res


def test_xmp_orientation_on_the_train_path(tmp_path):
    """Train DA draws its crop on the rotated size and crops the rotated pixels, as the
    reference does under the same seed (rounding of the jitter's blends only)."""
    path = photo_with(tmp_path / "xmp.jpg", xmp_packet(ATTRIBUTE.format(6)), size=(128, 80))
    image = Image.fromarray(reference(path))
    for seed in range(4):
        torch.manual_seed(seed), random.seed(seed)
        ours = loader_transform("train", 32, UNIT).load(path.parent, path.name)
        torch.manual_seed(seed), random.seed(seed)
        ref = build_transform("train", 32, UNIT)(image)
        assert (ours.float() - ref * 255).abs().max() <= 4, seed


def test_which_files_pillow_reads_the_header_of(tmp_path, monkeypatch):
    """A JPEG's header goes to Pillow only when it may carry an orientation: EXIF, or XMP naming
    ``tiff:Orientation``. XMP without one keeps libjpeg-turbo's header; XMP saying 1, EXIF
    saying 1 beside XMP saying 6 (EXIF wins in Pillow), or orientations switched off: upright,
    decoded on the fast path, the reference's pixels."""
    exif_upright = Image.Exif()
    exif_upright[0x0112] = 1
    files = {
        "no_orientation.jpg": (xmp_packet('<rdf:Description rdf:about="" '
                                          'xmlns:dc="http://purl.org/dc/elements/1.1/"/>'), None),
        "xmp_upright.jpg": (xmp_packet(ATTRIBUTE.format(1)), None),
        "exif_wins.jpg": (xmp_packet(ATTRIBUTE.format(6)), exif_upright.tobytes()),
    }
    opened = []
    real_open = fast_decode._open
    monkeypatch.setattr(fast_decode, "_open", lambda *a: opened.append(a) or real_open(*a))
    for name, (xmp, exif) in files.items():
        path = photo_with(tmp_path / name, xmp, exif)
        opened.clear()
        encoded = fast_decode.EncodedImage(path.parent, path.name)
        assert encoded.fast, name
        assert len(opened) == (0 if name == "no_orientation.jpg" else 1), name
        assert np.array_equal(encoded.decode(array=True), reference(path)), name
    rotated = photo_with(tmp_path / "rotated.jpg", xmp_packet(ATTRIBUTE.format(8)))
    off = DecodeOptions(exif_transpose=False)
    opened.clear()
    encoded = fast_decode.EncodedImage(rotated.parent, rotated.name, off)
    assert encoded.fast and not opened and encoded.size == (96, 64)
    assert np.array_equal(encoded.decode(array=True),
                          np.asarray(open_rgb(rotated.parent, rotated.name, off)))
    assert fast_decode.has_orientation(rotated.read_bytes())
    assert not fast_decode.has_orientation((tmp_path / "no_orientation.jpg").read_bytes())
