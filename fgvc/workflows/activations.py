"""``fgvc activations RUN`` and the end of ``fgvc run``: the pooled-activation statistics of a
finished run (paper, section 3.2), recomputed from its checkpoints for any split and
resolutions by a forward hook on the pooling module. ``fgvc run`` records them at its end for
runs with an adapt stage, on the first 128 images of the evaluation split.

The statistics themselves, the hook, ``activations.json``, its figure and its report section:
fgvc/analysis/activations.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fgvc.analysis.activations import (
    MAX_IMAGES,
    RUN_MAX_IMAGES,
    PooledRecorder,
    plot_cdf,
    update_file,
)
from fgvc.errors import UsageError

log = logging.getLogger(__name__)


def record_after_run(run_dir: Path, max_images: int = RUN_MAX_IMAGES) -> None:
    """End of ``fgvc run`` (main process): the statistics of the evaluation split at every
    evaluation resolution, before and after adaptation, on its first ``max_images`` images.
    A model without a global pooling module is logged and left out; a failure to load the
    weights again is a warning (the run's own outputs are already written)."""
    from fgvc.engine.adapt_methods import NoPoolingModule
    from fgvc.models.weights import WeightsError

    try:
        record_run(run_dir, max_images=max_images, within_run=True)
    except NoPoolingModule as err:
        log.info("activation statistics left out: %s", err)
    except (WeightsError, RuntimeError, OSError) as err:
        # The run's own outputs are complete; say why the statistics are missing, don't fail.
        log.warning("activation statistics not recorded: %s (retry with `fgvc activations %s`)",
                    err, run_dir)


def record_run(run_dir: Path, resolutions: list[int] | None = None, split: str | None = None,
               max_images: int = MAX_IMAGES, out: Path | None = None,
               within_run: bool = False) -> Path:
    """``fgvc activations``: recompute from a finished run's checkpoints. "before adaptation"
    is the model the adapt stage started from (``checkpoints/train.pt``, else the recipe's
    weights), "after adaptation" the adapt stage's checkpoint. ``within_run``: called by the
    run itself, whose device and precision are set (and their warning logged) already."""
    import dataclasses

    import torch

    from fgvc.engine.adapt_methods import load_model_state
    from fgvc.engine.checkpoint import load_checkpoint
    from fgvc.engine.context import RunContext
    from fgvc.engine.device import autocast, pick_device, set_precision
    from fgvc.engine.transfer import to_device
    from fgvc.models import create_model, data_config
    from fgvc.progress import progress
    from fgvc.recipes.splits import load_recipe_dataset
    from fgvc.runfolder import RunFolder, RunNotFinishedError

    folder = RunFolder.open(run_dir)
    recipe = folder.read_recipe()
    split = split or recipe.evaluate.split
    resolutions = resolutions or recipe.eval_resolutions
    index = load_recipe_dataset(recipe)
    if split not in index.splits:
        raise UsageError(f"--split: dataset {index.name!r} has no split {split!r} "
                         f"(it has: {', '.join(index.splits)})")
    device = pick_device(recipe.device)
    if not within_run:
        set_precision(recipe.precision, device)
    phases = {"after_adaptation": folder.checkpoint("adapt")}
    if recipe.stage("train") is not None:
        phases["before_adaptation"] = folder.checkpoint("train")
    elif recipe.stage("adapt") is not None:
        phases["before_adaptation"] = None  # the recipe's own starting weights
    if recipe.stage("adapt") is None:
        phases = {"before_adaptation": folder.checkpoint("train")}
    out = out or folder.activations_path
    out.unlink(missing_ok=True)
    for phase, weights in sorted(phases.items(), reverse=True):
        if weights is not None and not weights.is_file():
            raise RunNotFinishedError(f"{weights} not found: the run has not finished that stage")
        cfg = recipe.model if weights is None else dataclasses.replace(
            recipe.model, pretrained="none", weights=None)
        model = create_model(cfg, index.num_classes).to(device)
        if weights is not None:
            load_model_state(model, load_checkpoint(weights)["model"], weights)
        ctx = RunContext(recipe, run_dir, index, model, data_config(model, recipe.model), device)
        # One pass per phase, every resolution from one decode of each image (MultiCrop).
        recorders = {res: PooledRecorder(model, max_images) for res in resolutions}
        loader = ctx.eval_loader(split, list(resolutions), recipe.evaluate.batch_size)
        model.eval()
        for batches, labels, _, _ in progress(loader, desc=f"activations {phase}",
                                              unit="batch"):
            for res, images in batches.items():
                if len(labels) and recorders[res].kept < max_images:
                    with recorders[res], torch.no_grad(), autocast(device):
                        model(to_device(images.flatten(0, 1), device,
                                        recipe.model.channels_last, loader.device_transform))
            if all(r.kept >= max_images for r in recorders.values()):
                break
        for res, rec in recorders.items():
            update_file(out, phase, res, rec.stats(), split)
    plot_cdf(json.loads(out.read_text()), out.with_name(out.stem + "_cdf.png"))
    return out
