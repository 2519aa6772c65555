"""Image decoding: decompression bombs skipped and counted (and reported by `verify`), 16-bit
and other high-bit-depth images scaled instead of clipped, EXIF orientation applied."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.datasets import DatasetError
from fgvc.datasets.decode import PILLOW_MAX_IMAGE_PIXELS, BadImage, DecodeOptions, open_rgb


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG written chunk by chunk (Pillow cannot write some of the files tested here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def bomb_png(path: Path, width: int, height: int) -> None:
    """A valid PNG header declaring ``width x height`` (8-bit grey) with almost no data: what a
    decompression bomb looks like before it is decoded."""
    path.write_bytes(png_bytes(width, height, 8, 0, b"\x00" * 64))


def test_default_limit_is_pillows():
    from fgvc.recipes.recipe import DatasetConfig

    assert PILLOW_MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485
    cfg = DatasetConfig(name="cub200")
    assert cfg.max_image_pixels == PILLOW_MAX_IMAGE_PIXELS and cfg.exif_transpose is True


@pytest.mark.parametrize("width,height", [(12_000, 12_000), (20_000, 20_000)])
def test_bomb_is_a_bad_image(tmp_path, width, height):
    # 144 M pixels: over the limit, under Pillow's own error threshold (2x) where it only warns;
    # 400 M: Pillow refuses at open. Both are one of BAD_IMAGE_ERRORS.
    bomb_png(tmp_path / "bomb.png", width, height)
    with pytest.raises((BadImage, Image.DecompressionBombError), match=r"pixels"):
        open_rgb(tmp_path, "bomb.png")


def test_limit_is_the_recipes(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    with pytest.raises(BadImage, match=r"100x100 = 10,000 pixels is over dataset.max_image_pixels = 9,999"):
        open_rgb(tmp_path, "a.png", DecodeOptions(max_image_pixels=9_999))
    assert open_rgb(tmp_path, "a.png", DecodeOptions(max_image_pixels=None)).size == (100, 100)


def test_bomb_skipped_and_counted_in_training(tmp_path):
    import torch

    from fgvc.datasets.base import Sample
    from fgvc.datasets.images import ImageDataset, collate_skipping_bad

    bomb_png(tmp_path / "bomb.png", 12_000, 12_000)
    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "ok.jpg")
    samples = [Sample("ok.jpg", 0, "a"), Sample("bomb.png", 1, "b")]

    def to_tensor(image):
        return torch.from_numpy(np.asarray(image).copy())

    dataset = ImageDataset(tmp_path, samples, to_tensor, on_bad_image="skip")
    images, labels, _, bad = collate_skipping_bad([dataset[0], dataset[1]])
    assert len(images) == 1 and labels.tolist() == [0] and bad == 1
    strict = ImageDataset(tmp_path, samples, to_tensor, on_bad_image="fail")
    with pytest.raises(DatasetError, match=r"cannot read image .*bomb\.png: .*pixels"):
        strict[1]


def test_verify_reports_bombs(tmp_path, capsys):
    from fgvc.cli import main
    from fgvc.datasets.layouts import write_oxford_pets

    write_oxford_pets(tmp_path)
    bomb_png(tmp_path / "bomb.png", 12_000, 12_000)
    (tmp_path / "bomb.png").rename(tmp_path / "images" / "Bengal_2.jpg")
    assert main(["datasets", "verify", "oxford_pets", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "0 missing, 0 unreadable, 1 over the pixel limit" in out
    assert "too large (skipped in training): images/Bengal_2.jpg (12000x12000 = 144,000,000 pixels" in out
    assert main(["datasets", "verify", "oxford_pets", "--root", str(tmp_path),
                 "--max-image-pixels", "200000000"]) == 1  # decodable now, but the data is truncated
    assert "1 unreadable, 0 over the pixel limit" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_scaled_not_clipped(tmp_path, fmt):
    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / f"grey.{fmt.lower()}", format=fmt)
    decoded = np.asarray(open_rgb(tmp_path, f"grey.{fmt.lower()}"))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert decoded.shape == (64, 64, 3)
    assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1
    assert (decoded[..., 0] == decoded[..., 2]).all()
    assert abs(decoded.mean() - 127.5) < 1.0  # Pillow's convert("RGB") gives about 254


def test_16_bit_rgb_png(tmp_path):
    row = b"\x00" + struct.pack(">HHH", 0x8000, 0xFFFF, 0x0100) * 4  # filter byte, 4 pixels
    (tmp_path / "rgb16.png").write_bytes(png_bytes(4, 2, 16, 2, row * 2))
    assert np.asarray(open_rgb(tmp_path, "rgb16.png"))[1, 3].tolist() == [128, 255, 1]


def test_32_bit_integer_and_float_images(tmp_path):
    ints = np.full((8, 8), 1000, dtype=np.int32)
    ints[0, 0] = 65535
    Image.fromarray(ints, mode="I").save(tmp_path / "i.tiff")
    assert np.asarray(open_rgb(tmp_path, "i.tiff"))[1, 1, 0] == round(1000 / 257)
    floats = np.full((8, 8), 0.5, dtype=np.float32)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tiff")
    assert np.asarray(open_rgb(tmp_path, "f.tiff"))[1, 1, 0] == 128
    small = np.full((8, 8), 200, dtype=np.int32)
    Image.fromarray(small, mode="I").save(tmp_path / "small.tiff")  # an 8-bit range stays as is
    assert np.asarray(open_rgb(tmp_path, "small.tiff"))[1, 1, 0] == 200


def test_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = open_rgb(tmp_path, "rotated.jpg")
    assert upright.size == (20, 40)
    assert np.asarray(upright)[2, 10, 2] > 200  # the band is now at the top
    as_stored = open_rgb(tmp_path, "rotated.jpg", DecodeOptions(exif_transpose=False))
    assert as_stored.size == (40, 20)


def test_recipe_fields_validated():
    from fgvc.recipes.recipe import load_recipe
    from fgvc.recipes.schema import SchemaError

    recipe = load_recipe("recipes/quickstart.yaml", ["dataset.max_image_pixels=1000",
                                                     "dataset.exif_transpose=false"])
    from fgvc.datasets.decode import decode_options

    assert decode_options(recipe.dataset) == DecodeOptions(1000, False)
    assert load_recipe("recipes/quickstart.yaml", ["dataset.max_image_pixels=null"]
                       ).dataset.max_image_pixels is None
    with pytest.raises(SchemaError, match=r"dataset.max_image_pixels: must be a positive pixel count"):
        load_recipe("recipes/quickstart.yaml", ["dataset.max_image_pixels=0"])


def test_datasets_info_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    from fgvc.datasets.layouts import write_cub200

    write_cub200(tmp_path)
    code = ("import sys; from fgvc.cli import main; "
            f"rc = main(['datasets', 'info', 'cub200', '--root', {str(tmp_path)!r}]); "
            "assert rc == 0, rc; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert "cub200 at" in done.stdout
