"""Stage 2 on cached activations: run the frozen part of the network once, then every epoch on
what enters the adapted part.

During adaptation with a deterministic transform (test DA), everything that runs before the
first adapted module is frozen and in eval mode, so its output for an image never changes from
one epoch to the next. This module splits the network there (``torch.fx`` trace: the *prefix*
is every node before the earliest node belonging to an adapted module, in execution order; the
*tail* is the rest, which may be any graph, residual additions included), computes the prefix's
outputs that the tail reads (the *frontier*, e.g. for ``last_bn`` on a ResNet the input of the
last block's last BN and the block's shortcut input) once per split, and trains the tail on
them. The batches are the ones the per-epoch procedure would draw (same sampler, generator and
drop_last), so the adapted BNs see the same batch statistics and the result equals the
uncached procedure's to float rounding.

Falls back (``None``, with a log line saying why) when the transform is random, under torchrun,
when the model cannot be traced or the traced split does not reproduce the model's output, or
when the cache would exceed ``adapt_cache_gb``. Up to ``IN_MEMORY_BYTES`` the cache is held in
memory, above that in memory-mapped files under the run folder, deleted after the stage.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from fgvc.datasets.decode import decode_options
from fgvc.engine.data import make_loader
from fgvc.engine.device import autocast
from fgvc.engine.distributed import current
from fgvc.engine.freeze import TrainablePlan, set_train_mode
from fgvc.transforms import DeviceNormalize, loader_transform

if TYPE_CHECKING:
    from fgvc.engine.context import RunContext
    from fgvc.recipes.recipe import StageConfig

log = logging.getLogger(__name__)
IN_MEMORY_BYTES = 1 << 30  # larger caches go to memory-mapped files under the run folder


class Tail(nn.Module):
    """The adapted end of the network, called on a tuple of frontier tensors."""

    def __init__(self, graph_module: fx.GraphModule):
        super().__init__()
        self.graph_module = graph_module

    def forward(self, frontier: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.graph_module(*frontier)


@dataclass
class Split:
    prefix: fx.GraphModule  # image batch -> tuple of frontier tensors
    tail: Tail              # tuple of frontier tensors -> logits


def _belongs(target: str, paths: list[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in paths)


def split_model(model: nn.Module, adapted_paths: list[str]) -> Split | None:
    """Cut ``model`` before the first node of any adapted module; ``None`` if it cannot be.

    The submodules of both halves are the model's own objects (shared, not copied), so training
    the tail trains the model.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure means: use the slow path
        log.info("adapt cache: %s cannot be traced by torch.fx (%s)", type(model).__name__,
                 str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    nodes = list(graph.nodes)
    first = next((i for i, n in enumerate(nodes)
                  if n.op in ("call_module", "get_attr") and _belongs(str(n.target), adapted_paths)),
                 None)
    if first is None:
        return None
    head, rest = nodes[:first], nodes[first:]
    head_set = set(head)
    frontier = list(dict.fromkeys(a for n in rest for a in n.all_input_nodes
                                  if a in head_set and a.op != "get_attr"))
    if not frontier:
        return None

    prefix_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in head:
        env[node] = prefix_graph.node_copy(node, lambda a: env[a])
    prefix_graph.output(tuple(env[n] for n in frontier))

    tail_graph = fx.Graph()
    tail_env: dict[fx.Node, fx.Node] = {n: tail_graph.placeholder(f"frontier_{i}")
                                        for i, n in enumerate(frontier)}
    for node in rest:
        for arg in node.all_input_nodes:  # parameters read before the cut are read again here
            if arg not in tail_env and arg.op == "get_attr":
                tail_env[arg] = tail_graph.node_copy(arg, lambda a: tail_env[a])
        tail_env[node] = tail_graph.node_copy(node, lambda a: tail_env[a])
    prefix = fx.GraphModule(model, prefix_graph)
    tail = fx.GraphModule(model, tail_graph)
    return Split(prefix=prefix, tail=Tail(tail))


def verify_split(model: nn.Module, split: Split, batch: torch.Tensor, device: torch.device) -> bool:
    """The traced halves reproduce the model's output on ``batch`` (eval mode): guards against
    a trace that baked in a branch the model takes differently."""
    with _modes_kept(model), torch.no_grad(), autocast(device):
        model.eval()
        expected = model(batch).float()
        got = split.tail(split.prefix(batch)).float()
    return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


class CachedFeatures:
    """The frontier tensors of every image of one split, by dataset index."""

    def __init__(self, shapes: list[tuple[torch.Size, torch.dtype]], count: int,
                 folder: Path | None):
        self.count = count
        self.valid = torch.zeros(count, dtype=torch.bool)
        self.labels = torch.full((count,), -1, dtype=torch.long)
        self.files: list[Path] = []
        self.tensors = []
        for i, (shape, dtype) in enumerate(shapes):
            numel = count * math.prod(shape)
            if folder is None:
                self.tensors.append(torch.empty((count, *shape), dtype=dtype))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"frontier_{i}.bin"
            self.files.append(path)
            flat = torch.from_file(str(path), shared=True, size=numel, dtype=dtype)
            self.tensors.append(flat.view(count, *shape))

    def store(self, indices: torch.Tensor, labels: torch.Tensor,
              frontier: tuple[torch.Tensor, ...]) -> None:
        for buffer, values in zip(self.tensors, frontier, strict=True):
            buffer[indices] = values.detach().to("cpu")
        self.valid[indices] = True
        self.labels[indices] = labels

    def close(self) -> None:
        self.tensors = []
        for path in self.files:
            path.unlink(missing_ok=True)


def bytes_per_image(shapes: list[tuple[torch.Size, torch.dtype]]) -> int:
    return sum(math.prod(s) * torch.empty((), dtype=d).element_size() for s, d in shapes)


@torch.no_grad()
def fill(cache: CachedFeatures, prefix: nn.Module, loader: DataLoader, device: torch.device,
         channels_last: bool) -> None:
    """One pass of ``loader`` (in order, deterministic transform) through the frozen prefix."""
    from fgvc.engine.transfer import to_device
    from fgvc.progress import progress

    for images, labels, indices, _ in progress(loader, desc="adapt cache", unit="batch"):
        if len(labels) == 0:
            continue
        if images.ndim == 5:  # MultiCrop's (B, 1, 3, K, K)
            images = images.flatten(0, 1)
        with autocast(device):
            frontier = prefix(to_device(images, device, channels_last,
                                        getattr(loader, "device_transform", None)))
        cache.store(indices, labels, frontier)


class _Positions(Dataset):
    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return index


class CachedLoader:
    """Batches of cached frontier tensors, in the order ``order`` (a DataLoader over dataset
    positions, built exactly like the image loader it replaces) draws them; yields what the
    image loader would: ``(frontier, labels, indices, unreadable count)``. Given a dict of
    caches, one per resolution, it yields ``{resolution: frontier}`` as a multi-resolution
    image loader does."""

    def __init__(self, cache: CachedFeatures | dict[int, CachedFeatures], order: DataLoader):
        self.cache, self.order = cache, order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple]:
        pin = torch.cuda.is_available()
        views = self.cache if isinstance(self.cache, dict) else {None: self.cache}
        first = next(iter(views.values()))
        for positions in self.order:
            positions = torch.as_tensor(positions, dtype=torch.long)
            good = positions[first.valid[positions]]
            batch = {}
            for view, cache in views.items():
                frontier = tuple(t[good] for t in cache.tensors)
                batch[view] = tuple(t.pin_memory() for t in frontier) if pin else frontier
            yield (batch if isinstance(self.cache, dict) else batch[None],
                   first.labels[good], good, len(positions) - len(good))


def position_loader(count: int, make) -> DataLoader:
    """The index order of a loader built by ``make(dataset=..., num_workers=0, collate_fn=...)``:
    same sampler and generator, so the same draws, but no image is read."""
    return make(dataset=_Positions(count), num_workers=0, collate_fn=list)


@contextlib.contextmanager
def _modes_kept(model: nn.Module):
    """Restore every module's train/eval flag afterwards."""
    was = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for module, mode in was.items():
            module.training = mode


def _traced_code(model: nn.Module) -> str | None:
    try:
        return fx.symbolic_trace(model).code
    except Exception:  # noqa: BLE001 - reported by split_model
        return None


class AdaptCache:
    """What ``run_stage`` needs to run an adapt stage on cached activations."""

    def __init__(self, ctx: RunContext, stage: StageConfig, split: Split,
                 train: CachedFeatures, val: CachedFeatures, owns_val: bool = True):
        self.ctx, self.stage, self.split = ctx, stage, split
        self.train, self.val, self.owns_val = train, val, owns_val

    @property
    def tail(self) -> nn.Module:
        return self.split.tail

    def train_loader(self, epoch: int) -> CachedLoader:
        order = position_loader(self.train.count,
                                lambda **kw: self.ctx.train_loader(self.stage, epoch, **kw))
        return CachedLoader(self.train, order)

    def val_loader(self) -> CachedLoader:
        split, batch = self.ctx.recipe.dataset.val_split, self.ctx.recipe.evaluate.batch_size
        order = position_loader(
            self.val.count,
            lambda **kw: self.ctx.eval_loader(split, self.stage.resolution, batch, **kw))
        return CachedLoader(self.val, order)

    def close(self) -> None:
        self.train.close()
        if self.owns_val:
            self.val.close()


def traced_split(model: nn.Module, plan: TrainablePlan,
                 resolution: int) -> tuple[Split | None, str | None]:
    """The model cut before its first adapted module (re-estimated BNs included), or ``None``
    and why not: not traceable, traced differently in train and eval mode, or the halves do
    not reproduce the model's output."""
    with _modes_kept(model):
        set_train_mode(model, plan)
        train_code = _traced_code(model)
        model.eval()
        split = split_model(model, plan.mode_paths)
        device = next(model.parameters()).device
        probe = torch.randn(2, 3, resolution, resolution,
                            generator=torch.Generator().manual_seed(0)).to(device)
        if split is None:
            return None, "the adapted modules do not follow a traceable frozen part"
        if train_code != _traced_code(model):
            return None, "the traced network depends on train/eval mode"
        if not verify_split(model, split, probe, device):
            return None, "the traced split does not reproduce the network's output"
    return split, None


def frontier_shapes(split: Split, resolution: int,
                    device: torch.device) -> list[tuple[torch.Size, torch.dtype]]:
    """Shape (without the batch) and dtype of each frontier tensor at ``resolution`` (eval
    mode: the probe must not move any BN statistics)."""
    probe = torch.zeros(2, 3, resolution, resolution, device=device)
    with _modes_kept(split.prefix), torch.no_grad(), autocast(device):
        split.prefix.eval()
        return [(t.shape[1:], t.dtype) for t in split.prefix(probe)]


def adapt_cache(ctx: RunContext, stage: StageConfig, plan: TrainablePlan) -> AdaptCache | None:
    """Build the cache for an adapt stage, or return ``None`` (and log why) to use the
    per-epoch procedure. A train stage (every module trained) has nothing to cache."""
    if plan.everything:
        return None
    reason = _why_not(stage)
    split, reason = (None, reason) if reason else traced_split(ctx.model, plan, stage.resolution)
    shapes = [] if split is None else frontier_shapes(split, stage.resolution, ctx.device)
    if reason is not None:
        log.info("adapt cache: not used (%s); every epoch runs the whole network", reason)
        return None
    ds = ctx.recipe.dataset
    # The validation split's activations at this resolution may be those the evaluation before
    # adaptation kept (kept_activations.py): the same frozen weights, images and transform.
    kept = ctx.kept.view(ds.val_split, stage.resolution, plan.mode_paths, shapes) \
        if ctx.kept is not None else None
    counts = [len(ctx.index.split(ds.train_split)), len(ctx.index.split(ds.val_split))]
    total = bytes_per_image(shapes) * (counts[0] + (counts[1] if kept is None else 0))
    if total > stage.adapt_cache_gb * 1e9:
        log.info("adapt cache: not used (%.2f GB of activations > adapt_cache_gb %.2f); every "
                 "epoch runs the whole network", total / 1e9, stage.adapt_cache_gb)
        return None
    folder = ctx.folder.adapt_cache_dir if total > IN_MEMORY_BYTES else None
    train = CachedFeatures(shapes, counts[0], folder and folder / "train")
    val = kept or CachedFeatures(shapes, counts[1], folder and folder / "val")
    channels_last = ctx.recipe.model.channels_last
    ctx.model.eval()
    fill(train, split.prefix, make_loader(
        ctx.index, ds.train_split, transform=loader_transform("test", stage.resolution,
                                                              ctx.data_cfg),
        batch_size=ctx.recipe.evaluate.batch_size, num_workers=ds.num_workers,
        on_bad_image=ds.on_bad_image, decode=decode_options(ds),
        device_transform=DeviceNormalize(ctx.data_cfg)),
        ctx.device, channels_last)
    if kept is None:
        fill(val, split.prefix, ctx.eval_loader(ds.val_split, stage.resolution,
                                                ctx.recipe.evaluate.batch_size),
             ctx.device, channels_last)
    log.info("adapt cache: the frozen part ran once over %s at %d px (%.1f MB %s); the %d epochs "
             "train %s on the cached activations",
             f"{counts[0]} + {counts[1]} images" if kept is None else
             f"{counts[0]} images (the {counts[1]} validation images' activations are those kept "
             "from the evaluation before adaptation)", stage.resolution, total / 1e6,
             f"in {folder}" if folder else "in memory", stage.epochs, ", ".join(plan.module_paths))
    return AdaptCache(ctx, stage, split, train, val, owns_val=kept is None)


def _why_not(stage: StageConfig) -> str | None:
    if stage.augment != "test":
        return f"augment {stage.augment!r} is random, only 'test' is deterministic"
    if current().enabled:
        return "running under torchrun"
    if stage.adapt_cache_gb <= 0:
        return "adapt_cache_gb is 0"
    return None
