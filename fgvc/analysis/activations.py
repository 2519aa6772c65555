"""Statistics of the pooled features (paper, section 3.2, figures 3 and 4): for each test
resolution, before and after adaptation, the fraction of exact zeros, the fraction above 2, the
mean and percentiles of the values the classifier reads, and their CDF.

This module holds the statistics, the forward hook that records the pooled features, the
``activations.json`` file, its figure and its report section. Running a finished run's model
over a split to record them (``fgvc activations RUN``, and the end of ``fgvc run``) is a
workflow: fgvc/workflows/activations.py. Statistics use the first ``max_images`` images
(crops count as images) of the split, in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fgvc.runfolder import RunFolder

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


def update_file(path: Path, phase: str, resolution: int, stats: dict, split: str) -> None:
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.setdefault("split", split)
    stored.setdefault(phase, {})[str(resolution)] = stats
    from fgvc.io.atomic import atomic_write

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
    folder = RunFolder(run_dir)
    path = folder.activations_path
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
    if folder.activations_figure_path.exists():
        lines += ["", f"![CDF of pooled activations]({folder.ACTIVATIONS_FIGURE})"]
    return lines + [""]
