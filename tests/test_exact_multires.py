"""Multi-resolution evaluation: a resolution's inputs, logits and figures are those of a pass at
that resolution alone, whatever other resolutions share the pass, with the exact test decode
(the default) and with ``dataset.test_decode: reduced`` (where each resolution asks for its own
reduced-scale decode); so an interrupted-and-resumed run, whose evaluation cannot reuse the
passes made before the interruption, reports the uninterrupted run's figures.

The images are large enough (120-200 px) that a reduced decode is taken at 32 and 48 px, at
different scales: a pass that decoded once for both would differ.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_OPTIONS, tiny_recipe

import fgvc.datasets.fast_decode as fast_decode
from fgvc.datasets.decode import DecodeOptions
from fgvc.inference.tta import MultiCrop
from fgvc.transforms import DataConfig, resize_size

LARGE = {**TINY_OPTIONS, "min_side": 120, "max_side": 200, "train_per_class": 4,
         "val_per_class": 4, "test_per_class": 1}
RESOLUTIONS = [32, 40, 48]
MODES = {"exact": DecodeOptions(), "reduced": DecodeOptions(test_decode="reduced")}


@pytest.fixture(scope="module")
def large_root(tmp_path_factory) -> Path:
    from fgvc.datasets import load_dataset

    root = tmp_path_factory.mktemp("large") / "synthetic"
    load_dataset("synthetic", root, LARGE)
    return root


def _recipe(root: Path, tmp_path: Path, test_decode: str) -> dict:
    data = tiny_recipe(root, tmp_path)
    data["dataset"].update(options=LARGE, test_decode=test_decode)
    data["stages"] = data["stages"][:1]
    data["stages"][0]["epochs"] = 1
    data["evaluate"]["resolutions"] = [32, 48]
    data["predict"] = data["submission"] = None
    return data


def write_recipe(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _images(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def test_reduced_decodes_differ_between_the_resolutions(large_root, monkeypatch):
    """The premise: with ``test_decode: reduced`` the resolutions decode at different scales
    (one decode for all would change the smaller ones' pixels); the exact decode is the full
    image for every resolution, so one decode serves them all."""
    shapes: list[tuple] = []
    real = fast_decode.simplejpeg.decode_jpeg
    monkeypatch.setattr(fast_decode.simplejpeg, "decode_jpeg",
                        lambda *a, **k: shapes.append(real(*a, **k).shape) or real(*a, **k))
    path = _images(large_root)[0]
    height = fast_decode.EncodedImage(path.parent, path.name).size[1]
    MultiCrop(RESOLUTIONS, DataConfig()).load(path.parent, path.name, MODES["reduced"])
    assert len(set(shapes)) >= 2 and all(s[0] < height for s in shapes), shapes
    shapes.clear()
    MultiCrop(RESOLUTIONS, DataConfig()).load(path.parent, path.name, MODES["exact"])
    assert [s[0] for s in shapes] == [height]


@pytest.mark.parametrize("test_decode", MODES)
@pytest.mark.parametrize("crops", ["center", "ten_crop"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_joint_multires_inputs_equal_single_resolution_inputs(large_root, test_decode, crops,
                                                              interpolation):
    """Image by image, the uint8 crops of a joint pass equal those of one pass per resolution,
    bit for bit."""
    cfg = DataConfig(interpolation=interpolation)
    options = MODES[test_decode]
    joint = MultiCrop(RESOLUTIONS, cfg, crops)
    for path in _images(large_root)[:12]:
        together = joint.load(path.parent, path.name, options)
        for res in RESOLUTIONS:
            alone = MultiCrop(res, cfg, crops).load(path.parent, path.name, options)
            assert torch.equal(together[res], alone), (path.name, res)
    # ...and the pixels a joint pass decodes at the largest size are not what a smaller one
    # alone sees (the test can fail): the first image resized from its 48 px decode
    if test_decode == "reduced":
        path = _images(large_root)[0]
        encoded = fast_decode.EncodedImage(path.parent, path.name, options)
        short = resize_size(32, cfg.crop_pct)
        width, height = encoded.size
        small = (round(width * short / min(width, height)), round(height * short / min(width,
                                                                                      height)))
        assert encoded.request(*small) != encoded.request(*(2 * v for v in small))


@pytest.mark.parametrize("test_decode", MODES)
def test_joint_multires_pass_equals_separate_passes(large_root, tmp_path, test_decode):
    """Logit by logit: the model's outputs for every image of a joint 32+40+48 px pass equal
    those of three single-resolution passes, and the evaluation's per-image hits too."""
    from fgvc.engine.loop import evaluate
    from fgvc.workflows import pipeline

    ctx = _context(_recipe(large_root, tmp_path, test_decode), tmp_path)
    ctx.recipe.evaluate.resolutions = RESOLUTIONS
    batch = ctx.recipe.evaluate.batch_size
    joint = _logits(ctx, ctx.eval_loader("val", RESOLUTIONS, batch))
    for res in RESOLUTIONS:
        alone = _logits(ctx, ctx.eval_loader("val", res, batch))
        assert torch.equal(joint[res], alone), res
    results = pipeline.evaluate_resolutions(ctx, "before_adaptation")
    for res in RESOLUTIONS:
        single = evaluate(ctx.model, ctx.eval_loader("val", res, batch),
                          ctx.device, with_hits=True)
        assert results[str(res)]["top1"] == single["top1"]
        assert results[str(res)]["loss"] == single["loss"]
        assert np.array_equal(ctx.passes.get(_key(ctx, res))["hits"], single["hits"])


def test_resumed_evaluation_equals_uninterrupted(large_root, tmp_path, monkeypatch):
    """A one-stage run interrupted during its evaluation (after the stage's checkpoint): the
    resumed run can no longer reuse the stage's last validation for 32 px, so it evaluates
    32 and 48 px in one pass; its evaluation.json equals the uninterrupted run's (timings and
    the reuse flag aside), per-image hits included. ``test_decode: reduced``, where the
    resolutions decode at different scales."""
    from fgvc.cli import main
    from fgvc.workflows import pipeline

    data = _recipe(large_root, tmp_path, "reduced")
    recipe = write_recipe(tmp_path, data)
    assert main(["run", recipe]) == 0
    passes = []
    real = pipeline.evaluate

    def interrupted(*args, **kwargs):
        passes.append(kwargs.get("views"))
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluate", interrupted)
    assert main(["run", recipe]) == 130
    assert passes == [[48]]  # the uninterrupted run's evaluation: 32 px reused, 48 px alone
    monkeypatch.setattr(pipeline, "evaluate",
                        lambda *a, **k: passes.append(k.get("views")) or real(*a, **k))
    assert main(["run", recipe, "--resume"]) == 0
    assert passes[1:] == [[32, 48]]  # the resumed evaluation: one pass for both
    runs = Path(data["output_root"])
    straight, resumed = (torch.load(runs / name / "checkpoints" / "train.pt",
                                    weights_only=True)["model"] for name in ("tiny", "tiny-2"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # the same weights
    first, second = (_without_timings(json.loads((runs / name / "evaluation.json").read_text()))
                     for name in ("tiny", "tiny-2"))
    assert all("top1_hits" in first["before_adaptation"][r] for r in ("32", "48"))
    assert first == second


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("seconds", "reused")}
    return value


def _logits(ctx, loader) -> dict | torch.Tensor:
    """Every image's logits in dataset order: ``{resolution: (N, crops, classes)}`` for a joint
    loader, ``(N, crops, classes)`` for one resolution."""
    ctx.model.eval()
    chunks: dict = {}
    with torch.no_grad():
        for images, _, _, _ in loader:
            views = images if isinstance(images, dict) else {None: images}
            for view, batch in views.items():
                batch = loader.device_transform(batch)
                out = ctx.model(batch.flatten(0, 1)).view(*batch.shape[:2], -1)
                chunks.setdefault(view, []).append(out)
    out = {view: torch.cat(parts) for view, parts in chunks.items()}
    return out.get(None, out)


def _key(ctx, res: int) -> tuple:
    from fgvc.engine.evaluation_cache import PassMemo, weights_digest

    cfg = ctx.recipe.evaluate
    return PassMemo.key(weights_digest(ctx.model), cfg.split, res, cfg.crops, cfg.average)


def _context(data: dict, run_dir: Path):
    from fgvc.datasets import load_dataset
    from fgvc.engine.context import RunContext
    from fgvc.models import create_model, data_config
    from fgvc.recipes.recipe import parse_recipe

    recipe = parse_recipe(copy.deepcopy(data))
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    torch.manual_seed(0)
    model = create_model(recipe.model, index.num_classes)
    return RunContext(recipe, run_dir, index, model, data_config(model, recipe.model),
                      torch.device("cpu"))
