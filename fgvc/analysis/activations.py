"""Statistics of the pooled features (paper, section 3.2, figures 3 and 4): for each test
resolution, before and after adaptation, the fraction of exact zeros, the fraction above 2, the
mean and percentiles of the values the classifier reads, and their CDF.

``fgvc activations RUN`` computes them from the run's checkpoints for any split and resolutions
(a forward hook on the pooling module); ``fgvc run`` does the same at its end for runs with an
adapt stage, on the first 128 images of the evaluation split. Statistics use the first
``max_images`` images (crops count as images) of the split, in order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
CDF_POINTS = 101
MAX_IMAGES = 2000
RUN_MAX_IMAGES = 128  # at the end of `fgvc run`: cheap next to the evaluation itself
PHASE_TITLES = {"before_adaptation": "before adaptation", "after_adaptation": "after adaptation"}


def activation_stats(features: np.ndarray) -> dict[str, Any]:
    """Summary of a (images x channels) array of pooled features, all values pooled together."""
    values = np.asarray(features, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no activation to summarise")
    levels = np.linspace(0, 1, CDF_POINTS)
    return {
        "images": int(features.shape[0]), "values": int(values.size),
        "zeros": float(np.mean(values == 0)), "above_2": float(np.mean(values > 2)),
        "mean": float(values.mean()), "std": float(values.std()),
        "percentiles": {str(p): float(v) for p, v in
                        zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)},
        "cdf": {"levels": [round(float(x), 4) for x in levels],
                "values": [float(v) for v in np.quantile(values, levels)]},
    }


class PooledRecorder:
    """Context manager: keeps the pooling module's output (first ``max_images`` rows) while
    the model runs, e.g. during an evaluation pass."""

    def __init__(self, model, max_images: int = MAX_IMAGES):
        self.model, self.max_images = model, max_images
        self.chunks: list[np.ndarray] = []
        self.kept = 0

    def _hook(self, _module, _inputs, output) -> None:
        if self.kept < self.max_images:
            rows = output.detach().float().flatten(1).cpu().numpy()[: self.max_images - self.kept]
            self.chunks.append(rows)
            self.kept += len(rows)

    def __enter__(self) -> PooledRecorder:
        from fgvc.engine.adapt_methods import pool_module_path

        module = getattr(self.model, pool_module_path(self.model))
        self.handle = module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def stats(self) -> dict[str, Any]:
        """Of this process's rows (under torchrun, ``fgvc run`` records on the main process's
        shard of the split only)."""
        return activation_stats(np.concatenate(self.chunks)[: self.max_images])


def record_after_run(run_dir: Path, max_images: int = RUN_MAX_IMAGES) -> None:
    """End of ``fgvc run`` (main process): the statistics of the evaluation split at every
    evaluation resolution, before and after adaptation, on its first ``max_images`` images.
    A model without a global pooling module is logged and left out; a failure to load the
    weights again is a warning (the run's own outputs are already written)."""
    from fgvc.engine.adapt_methods import NoPoolingModule
    from fgvc.models.weights import WeightsError

    try:
        record_run(run_dir, max_images=max_images)
    except NoPoolingModule as err:
        log.info("activation statistics left out: %s", err)
    except (WeightsError, RuntimeError, OSError) as err:
        # The run's own outputs are complete; say why the statistics are missing, don't fail.
        log.warning("activation statistics not recorded: %s (retry with `fgvc activations %s`)",
                    err, run_dir)


def update_file(path: Path, phase: str, resolution: int, stats: dict, split: str) -> None:
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.setdefault("split", split)
    stored.setdefault(phase, {})[str(resolution)] = stats
    from fgvc.engine.atomic import atomic_write

    atomic_write(path, json.dumps(stored, indent=1) + "\n")


def plot_cdf(activations: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in PHASE_TITLES if p in activations]
    fig, axes = plt.subplots(1, len(phases), figsize=(5 * len(phases), 3.8), dpi=110,
                             sharey=True, squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        for res in sorted(activations[phase], key=int):
            cdf = activations[phase][res]["cdf"]
            ax.plot(cdf["values"], cdf["levels"], label=f"{res} px")
        ax.set_title(PHASE_TITLES[phase])
        ax.set_xlabel("pooled activation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("CDF")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown_lines(run_dir: Path) -> list[str]:
    """The report section: one row per (phase, resolution)."""
    path = run_dir / "activations.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    lines = [f"## Pooled activations ({data.get('split', '?')} split, paper section 3.2)", "",
             "| phase | resolution | zeros % | > 2 % | mean | p5 | p50 | p95 | images |",
             "|---|---|---|---|---|---|---|---|---|"]
    for phase, title in PHASE_TITLES.items():
        for res in sorted(data.get(phase, {}), key=int):
            s = data[phase][res]
            p = s["percentiles"]
            lines.append(f"| {title} | {res} | {100 * s['zeros']:.1f} | {100 * s['above_2']:.1f} "
                         f"| {s['mean']:.3f} | {p['5']:.3f} | {p['50']:.3f} | {p['95']:.3f} "
                         f"| {s['images']} |")
    if (run_dir / "activations_cdf.png").exists():
        lines += ["", "![CDF of pooled activations](activations_cdf.png)"]
    return lines + [""]


def record_run(run_dir: Path, resolutions: list[int] | None = None, split: str | None = None,
               max_images: int = MAX_IMAGES, out: Path | None = None) -> Path:
    """``fgvc activations``: recompute from a finished run's checkpoints. "before adaptation"
    is the model the adapt stage started from (``checkpoints/train.pt``, else the recipe's
    weights), "after adaptation" the adapt stage's checkpoint."""
    import dataclasses

    import torch

    from fgvc.engine.adapt_methods import load_model_state
    from fgvc.engine.checkpoint import load_checkpoint
    from fgvc.engine.device import autocast, pick_device, set_precision
    from fgvc.engine.loop import _to_device
    from fgvc.engine.stage import RunContext
    from fgvc.models import create_model, data_config
    from fgvc.progress import progress
    from fgvc.runfolder import RunFolder
    from fgvc.workflows.pipeline import load_recipe_dataset

    folder = RunFolder.open(run_dir)
    recipe = folder.read_recipe()
    split = split or recipe.evaluate.split
    resolutions = resolutions or recipe.eval_resolutions
    index = load_recipe_dataset(recipe)
    if split not in index.splits:
        raise ValueError(f"--split: dataset {index.name!r} has no split {split!r} "
                         f"(it has: {', '.join(index.splits)})")
    device = pick_device(recipe.device)
    set_precision(recipe.precision, device)
    phases = {"after_adaptation": folder.checkpoint("adapt")}
    if recipe.stage("train") is not None:
        phases["before_adaptation"] = folder.checkpoint("train")
    elif recipe.stage("adapt") is not None:
        phases["before_adaptation"] = None  # the recipe's own starting weights
    if recipe.stage("adapt") is None:
        phases = {"before_adaptation": folder.checkpoint("train")}
    out = out or run_dir / "activations.json"
    out.unlink(missing_ok=True)
    for phase, weights in sorted(phases.items(), reverse=True):
        if weights is not None and not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: the run has not finished that stage")
        cfg = recipe.model if weights is None else dataclasses.replace(
            recipe.model, pretrained="none", weights=None)
        model = create_model(cfg, index.num_classes).to(device)
        if weights is not None:
            load_model_state(model, load_checkpoint(weights)["model"])
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
                        model(_to_device(images.flatten(0, 1), device,
                                         recipe.model.channels_last, loader.device_transform))
            if all(r.kept >= max_images for r in recorders.values()):
                break
        for res, rec in recorders.items():
            update_file(out, phase, res, rec.stats(), split)
    plot_cdf(json.loads(out.read_text()), out.with_name(out.stem + "_cdf.png"))
    return out
