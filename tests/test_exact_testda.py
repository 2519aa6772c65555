"""Test DA as run equals test DA as defined: the fast path (``FastTest``, the adapt stage's test
DA; ``MultiCrop``, evaluation and prediction) against the reference transform (PIL decode, PIL
resize, centre crop) on fine textures (per-pixel noise, fine stripes) at 2, 3, 4 and 8 times the
resize size, image by image. The default decode is the full image, so the only difference is
torch's uint8 resize rounding PIL's filter differently: at most one grey level, a mean under
0.1 level (well inside the fast-path tests' bound, a mean under 3 levels).

The reduced-scale decode is ``dataset.test_decode: reduced``, off unless a recipe asks for it;
on these textures it is far outside that bound (which is why it is not the default).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import fgvc.datasets.fast_decode as fast_decode
from fgvc.datasets.decode import DEFAULT_OPTIONS, DecodeOptions, decode_options, open_rgb
from fgvc.inference.tta import MultiCrop
from fgvc.transforms import DataConfig, build_transform, loader_transform, resize_size

UNIT = DataConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # normalised = pixels / 255
FACTORS = (2, 3, 4, 8)
REDUCED = DecodeOptions(test_decode="reduced")


def texture(path, kind: str, width: int, height: int):
    """Per-pixel colour noise or fine diagonal stripes: the most high-frequency content a JPEG
    keeps, where two low-pass filters differ most."""
    rng = np.random.default_rng(width + height)
    if kind == "noise":
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        x, y = np.arange(width)[None, :, None], np.arange(height)[:, None, None]
        pixels = (127.5 + 127.5 * np.sin(2 * np.pi * (0.37 * x + 0.11 * y))).repeat(3, 2)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=92)
    return path


def levels(fast: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """|fast - reference| in grey levels (``fast`` uint8, ``reference`` normalised by UNIT)."""
    assert fast.shape == reference.shape
    return (fast.float() - reference * 255).abs()


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> list:
    """(path, kind, factor) for each texture at each factor of the 64 px resize size (73)."""
    folder = tmp_path_factory.mktemp("textures")
    short = resize_size(64, UNIT.crop_pct)
    return [(texture(folder / f"{kind}_{f}.jpg", kind, f * short * 4 // 3, f * short), kind, f)
            for kind in ("noise", "stripes") for f in FACTORS]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_test_da_as_run_equals_test_da_as_defined(textures, interpolation):
    cfg = dataclasses.replace(UNIT, interpolation=interpolation)
    reference = build_transform("test", 64, cfg)
    for path, kind, factor in textures:
        ref = reference(open_rgb(path.parent, path.name))
        diff = levels(loader_transform("test", 64, cfg).load(path.parent, path.name), ref)
        assert diff.mean() < 3 and diff.max() <= 1 and diff.mean() < 0.1, (kind, factor)
        crops = MultiCrop(64, cfg).load(path.parent, path.name, DEFAULT_OPTIONS)
        assert levels(crops[0], ref).max() <= 1, (kind, factor)


def test_ten_crops_and_joint_resolutions_equal_the_reference(textures):
    """Evaluation's other views: 10-crop, and a 64 + 96 px pass, against the reference
    ``MultiCrop`` on the PIL image."""
    for path, kind, factor in textures[::3]:
        image = open_rgb(path.parent, path.name)
        for resolutions, mode in ((64, "ten_crop"), ([64, 96], "center")):
            crops = MultiCrop(resolutions, UNIT, mode)
            fast, ref = crops.load(path.parent, path.name), crops(image)
            pairs = ([(fast[r], ref[r]) for r in resolutions] if isinstance(resolutions, list)
                     else [(fast, ref)])
            for ours, theirs in pairs:
                assert levels(ours, theirs).max() <= 1, (kind, factor, resolutions, mode)


def test_224px_test_da_on_a_fine_texture_twice_the_resize_size(tmp_path):
    """The case measured at 224 px: a JPEG twice the resize size, which the reduced decode
    takes at half scale (a mean of 10-26 grey levels off); the default is the reference's."""
    short = resize_size(224, UNIT.crop_pct)
    for kind in ("noise", "stripes"):
        path = texture(tmp_path / f"{kind}.jpg", kind, 2 * short * 4 // 3, 2 * short)
        ref = build_transform("test", 224, UNIT)(open_rgb(path.parent, path.name))
        exact = levels(loader_transform("test", 224, UNIT).load(path.parent, path.name), ref)
        reduced = levels(loader_transform("test", 224, UNIT).load(path.parent, path.name,
                                                                  REDUCED), ref)
        assert exact.max() <= 1 and exact.mean() < 0.1, kind
        assert reduced.mean() > 3, (kind, reduced.mean())  # the opt-in is not test DA


def test_default_decodes_the_full_image(textures, monkeypatch):
    """Without ``test_decode: reduced`` no reduced-scale decode is asked for, whatever the
    image's size (one full decode per image, shared by a pass's resolutions); with it, each
    resolution whose resize size the image exceeds twice asks for its own."""
    asked = []
    real = fast_decode.simplejpeg.decode_jpeg
    monkeypatch.setattr(fast_decode.simplejpeg, "decode_jpeg",
                        lambda *a, **k: asked.append(k) or real(*a, **k))
    short = resize_size(64, UNIT.crop_pct)
    for path, kind, factor in textures:
        for options in (DEFAULT_OPTIONS, REDUCED):
            asked.clear()
            loader_transform("test", 64, UNIT).load(path.parent, path.name, options)
            MultiCrop([64, 96], UNIT, "ten_crop").load(path.parent, path.name, options)
            smaller = [bool(k.get("min_width") or k.get("min_height")) for k in asked]
            expected = ([False, False] if options is DEFAULT_OPTIONS else
                        [True, True, factor * short >= 2 * resize_size(96, UNIT.crop_pct)])
            assert smaller == expected, (kind, factor, options, asked)


def test_reduced_test_decode_is_an_explicit_opt_in(tiny_recipe_dict):
    """Off by default, off in every shipped recipe, carried from the recipe to the loaders'
    decode options when asked for, documented in the schema, a bad value refused in one
    line naming the field."""
    from fgvc.recipes.fields import description_of
    from fgvc.recipes.library import shipped_dir
    from fgvc.recipes.recipe import DatasetConfig, parse_recipe
    from fgvc.recipes.schema import SchemaError

    assert DEFAULT_OPTIONS.test_decode == "exact"
    recipe = parse_recipe(tiny_recipe_dict)
    assert recipe.dataset.test_decode == "exact"
    assert decode_options(recipe.dataset).test_decode == "exact"
    tiny_recipe_dict["dataset"]["test_decode"] = "reduced"
    assert decode_options(parse_recipe(tiny_recipe_dict).dataset) == REDUCED
    shipped = sorted(shipped_dir().rglob("*.yaml"))
    assert shipped and not [p for p in shipped if "test_decode" in p.read_text()]
    described = description_of(DatasetConfig, "test_decode")
    assert "`exact`" in described and "`reduced`" in described and "paper" in described
    tiny_recipe_dict["dataset"]["test_decode"] = "fast"
    with pytest.raises(SchemaError) as refused:
        parse_recipe(tiny_recipe_dict)
    lines = [p for p in refused.value.problems if "test_decode" in p]
    assert len(lines) == 1 and "'exact'" in lines[0] and "'reduced'" in lines[0], lines


def test_resuming_with_another_test_decode_evaluates_again(tmp_path):
    """Stored evaluations were made with the other decode's pixels: a resume allowed to change
    ``dataset.test_decode`` discards them, as it does for a change to ``evaluate``."""
    from fgvc.runfolder import RunFolder
    from fgvc.workflows.pipeline import _discard_outdated_work

    folder, no_stages = RunFolder(tmp_path), SimpleNamespace(stages=[])
    for changes, kept in (({"dataset.num_workers": (2, 0)}, True),
                          ({"dataset.test_decode": ("exact", "reduced")}, False)):
        folder.write_evaluation({"before_adaptation": {"32": {"top1": 50.0}}})
        _discard_outdated_work(folder, no_stages, changes)
        assert folder.evaluation_path.exists() == kept, changes
