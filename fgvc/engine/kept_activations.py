"""The evaluation before adaptation keeps what enters the adapted part, so the evaluation after
adaptation runs the adapted tail alone.

Adaptation (stage 2) trains the end of the network; everything before its first adapted module
is frozen and in eval mode, so what an evaluation image sends into the adapted part at a given
resolution (the *frontier*, see feature_cache.py) is the same before and after adaptation. The
multi-resolution evaluation before adaptation computes it anyway: kept, it turns three later
passes into passes of the tail alone: the evaluation after adaptation at every resolution kept,
the adapt stage's validation cache at its resolution, and the per-image predictions on the
evaluation split. The tail is where the weights changed, so nothing is approximated: the same
operations run on the same inputs (the results equal a full pass to float rounding, and the
tests check it).

Before every use the model is cut again as it is now (``traced_split``), and the new tail runs:
an adaptation may swap modules (``frechet`` wraps the pooling, ``gaussian`` the last activation)
or change them in place, and the tail traced before adaptation would still hold the old ones.
A kept view is used only while the new prefix is the one it was computed with: the same graph,
the same module objects and the same weights (a digest of the prefix's tensors; e.g. a
``bn_stats`` adaptation of every BN changes it). Otherwise the full pass runs.

Not kept, with a log line: under torchrun (each process sees a shard), for evaluations with
several crops per image, when the model cannot be split (feature_cache.traced_split), or when
the activations would exceed the adapt stage's ``adapt_cache_gb`` (memory-mapped files under
the run folder above ``IN_MEMORY_BYTES``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.fx as fx

from fgvc.engine.distributed import current
from fgvc.engine.evaluation_cache import weights_digest
from fgvc.engine.feature_cache import (
    IN_MEMORY_BYTES,
    CachedFeatures,
    CachedLoader,
    Split,
    bytes_per_image,
    frontier_shapes,
    position_loader,
    traced_split,
)
from fgvc.engine.freeze import plan_trainable

if TYPE_CHECKING:
    from fgvc.engine.context import RunContext

log = logging.getLogger(__name__)


class KeptActivations:
    """Frontier tensors of one evaluation split at several resolutions, one crop per image."""

    def __init__(self, ctx: RunContext, split: Split, mode_paths: list[str], eval_split: str,
                 views: dict[int, CachedFeatures]):
        self.ctx, self.split, self.mode_paths = ctx, split, mode_paths
        self.eval_split, self.views = eval_split, views
        self.digest = weights_digest(split.prefix)
        self.probe_resolution = next(iter(views))
        self.complete = False  # set once the pass that fills the views has finished

    @property
    def tail(self) -> torch.nn.Module:
        return self.split.tail

    def forward(self, resolution: int, labels: torch.Tensor,
                indices: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model's forward for one batch of the filling pass: prefix, keep, tail."""
        def run(images: torch.Tensor) -> torch.Tensor:
            frontier = self.split.prefix(images)
            self.views[resolution].store(indices, labels, frontier)
            return self.split.tail(frontier)
        return run

    def serves(self, eval_split: str, resolutions: list[int], crops: str) -> list[int]:
        """Those of ``resolutions`` this holds for ``eval_split`` with ``crops``, if the frozen
        part still has the weights they were computed with; else none."""
        found = [r for r in resolutions if r in self.views]
        if not (self.complete and found and eval_split == self.eval_split and crops == "center"):
            return []
        reason = self._follow_model()
        if reason is not None:
            log.info("kept activations: not used, %s; the whole network runs", reason)
            self.close()
            return []
        return found

    def _follow_model(self) -> str | None:
        """Cut ``ctx.model`` again as it is now and take the new tail, or say why the kept
        views no longer describe what enters it. Re-tracing (not only comparing weights) is
        what sees a module the adaptation swapped in: the old tail still holds the old one."""
        stage = self.ctx.recipe.stage("adapt")
        plan = plan_trainable(self.ctx.model, stage.trainable, stage.reestimate)
        split, reason = traced_split(self.ctx.model, plan, self.probe_resolution)
        if split is None:
            return f"the adapted network cannot be cut again ({reason})"
        if (split.prefix.code != self.split.prefix.code
                or not same_modules(split.prefix, self.split.prefix)):
            return "the frozen part is not the network the activations were kept from"
        if weights_digest(split.prefix) != self.digest:
            return "the frozen part's weights changed since the evaluation before adaptation"
        self.split = split
        return None

    def view(self, eval_split: str, resolution: int, mode_paths: list[str],
             shapes: list[tuple[torch.Size, torch.dtype]]) -> CachedFeatures | None:
        """One resolution's cache, for the adapt stage's validation (same split, same cut)."""
        if mode_paths != self.mode_paths or not self.serves(eval_split, [resolution], "center"):
            return None
        found = self.views[resolution]
        kept_shapes = [(t.shape[1:], t.dtype) for t in found.tensors]
        return found if kept_shapes == shapes else None

    def loader(self, resolutions: int | list[int], batch_size: int) -> CachedLoader:
        """Batches as the image loader of ``ctx.eval_loader`` yields them, from the kept views:
        ``{resolution: frontier}`` for a list, the frontier for one resolution."""
        views = ({r: self.views[r] for r in resolutions} if isinstance(resolutions, list)
                 else self.views[resolutions])
        count = next(iter(self.views.values())).count
        first = resolutions[0] if isinstance(resolutions, list) else resolutions
        return CachedLoader(views, position_loader(count, lambda **kw: self.ctx.eval_loader(
            self.eval_split, first, batch_size, **kw)))

    def close(self) -> None:
        for cache in self.views.values():
            cache.close()
        self.views, self.complete = {}, False


def same_modules(a: fx.GraphModule, b: fx.GraphModule) -> bool:
    """Every module and tensor the graph of ``a`` reads is the very object ``b`` reads at that
    path (the graphs are equal): the same code on the same objects."""
    targets = [n.target for n in a.graph.nodes if n.op in ("call_module", "get_attr")]
    return all(_attribute(a, t) is _attribute(b, t) for t in targets)


def _attribute(module: torch.nn.Module, target: str):
    return functools.reduce(getattr, target.split("."), module)


def start_keeping(ctx: RunContext, eval_split: str, resolutions: list[int],
                  crops: str) -> KeptActivations | None:
    """Empty views to fill during the evaluation before adaptation, or ``None`` (logged)."""
    stage = ctx.recipe.stage("adapt")
    if stage is None or not resolutions:
        return None
    plan = plan_trainable(ctx.model, stage.trainable, stage.reestimate)
    reason = None
    if plan.everything:
        reason = "the adapt stage trains every module"
    elif current().enabled:
        reason = "running under torchrun"
    elif crops != "center":
        reason = f"crops {crops!r}: only one crop per image is kept"
    elif stage.adapt_cache_gb <= 0:
        reason = "adapt_cache_gb is 0"
    split = None
    if reason is None:
        split, reason = traced_split(ctx.model, plan, resolutions[0])
    shapes = {} if split is None else {r: frontier_shapes(split, r, ctx.device)
                                       for r in resolutions}
    count = len(ctx.index.split(eval_split))
    total = sum(bytes_per_image(s) for s in shapes.values()) * count
    if reason is None and total > stage.adapt_cache_gb * 1e9:
        reason = (f"{total / 1e9:.2f} GB of activations > the adapt stage's adapt_cache_gb "
                  f"{stage.adapt_cache_gb:.2f}")
    if reason is not None:
        log.info("kept activations: none (%s); the evaluation after adaptation runs the whole "
                 "network", reason)
        return None
    folder = ctx.folder.kept_activations_dir if total > IN_MEMORY_BYTES else None
    views = {r: CachedFeatures(s, count, folder and folder / str(r)) for r, s in shapes.items()}
    log.info("kept activations: what enters %s at %s px for the %d %s images (%.1f MB %s), "
             "for the passes after adaptation", ", ".join(plan.module_paths),
             ", ".join(map(str, resolutions)), count, eval_split, total / 1e6,
             f"in {folder}" if folder else "in memory")
    return KeptActivations(ctx, split, plan.mode_paths, eval_split, views)
