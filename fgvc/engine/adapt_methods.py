"""Label-free adaptation (paper, section 4.2 and appendix A): the adapt stage's ``method``.

- ``finetune`` (default): SGD on the adapted groups, handled by ``fgvc.engine.stage``.
- ``bn_stats``: no loss, no labels, no gradient. The whole network in eval mode except the
  BNs inside the adapted groups (and ``reestimate``), whose running statistics are re-estimated
  at K_test over ``epochs`` passes of ``data_split`` through the stage's transform. Every other
  tensor stays bit-identical. On ``data_split: test`` this is transductive: it uses the test
  images (never their labels).
- ``frechet``: fit the Fréchet model (``fgvc.analysis.frechet``) to the pooled activations of
  ``data_split`` at K_train (``reference_resolution``) and at K_test, and insert the fitted
  scalar affine map after the global pooling (``PooledAffineMap``). The map's parameters are
  buffers of the model, so they travel in the checkpoint; ``load_model_state`` reinstalls the
  wrapper before loading such a checkpoint.
- ``gaussian`` (appendix A.2): per-channel Gaussians of the input of the last activation (the
  ReLU whose output the global pooling reads) measured on ``data_split`` at K_train and at
  K_test (``fgvc.analysis.gaussian`` says what is computed and which choices were made), and the
  per-channel affine map between them applied to that input (``PreActivationMap``), so the
  sparsity after the ReLU moves too. Its buffer travels in the checkpoint like the Fréchet map's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from fgvc.datasets.raw import DatasetError
from fgvc.engine.checkpoint import save_checkpoint
from fgvc.engine.device import autocast
from fgvc.engine.distributed import barrier, broadcast_object, current, gather_objects
from fgvc.engine.freeze import adapted_batchnorms, plan_trainable
from fgvc.engine.seeding import epoch_seed, seed_everything
from fgvc.engine.transfer import to_device
from fgvc.errors import FgvcError, RecipeError
from fgvc.io.atomic import atomic_write
from fgvc.models.weights import load_exactly
from fgvc.progress import progress

log = logging.getLogger(__name__)

POOL_ATTRIBUTES = ("global_pool", "avg_pool", "avgpool")  # timm, Cadene, torchvision
MAP_BUFFER = "frechet_params"
GAUSSIAN_BUFFER = "gaussian_map"
# Where activation modules are defined (torch's and timm's): the module feeding the pooling must
# be one of them for method gaussian.
ACTIVATION_MODULES = ("torch.nn.modules.activation", "timm.layers.activations")


class PooledAffineMap(nn.Module):
    """The pooling module followed by the paper's equalisation map on its non-zero outputs:
    ``x -> mu_ref + sigma_ref / sigma0 * (x - mu0)``. ``frechet_params`` holds
    ``[mu0, sigma0, mu_ref, sigma_ref]``."""

    def __init__(self, pool: nn.Module, params: list[float] | None = None):
        super().__init__()
        self.pool = pool
        self.register_buffer(MAP_BUFFER, torch.tensor(params or [0.0, 1.0, 0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        p = self.frechet_params.to(y.dtype)  # indexed, not unpacked: torch.fx traces it
        return torch.where(y > 0, p[2] + p[3] / p[1] * (y - p[0]), y)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # timm asks its pool for flatten/is_identity etc.
            return getattr(super().__getattr__("pool"), name)


class PreActivationMap(nn.Module):
    """The last activation with appendix A.2's per-channel affine map on its input:
    ``act(scale_c * x + shift_c)``. ``gaussian_map`` holds ``[scale, shift]``, shaped
    (2, C, 1, 1) for feature maps and (2, C) for vectors, so that it broadcasts over the
    input; the new tensor it makes leaves an in-place activation's input untouched."""

    def __init__(self, act: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.act = act
        identity = torch.zeros(shape)
        identity[0] = 1
        self.register_buffer(GAUSSIAN_BUFFER, identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.gaussian_map.to(x.dtype)
        return self.act(x * m[0] + m[1])


class NoPoolingModule(FgvcError, ValueError):
    """The model has no global pooling module to hook or wrap."""


class NoLastActivation(FgvcError, ValueError):
    """Method gaussian cannot find the one activation module whose output the pooling reads."""


def pool_module_path(model: nn.Module) -> str:
    """Where the global pooling lives (its output is what the classifier reads)."""
    for name in POOL_ATTRIBUTES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise NoPoolingModule(f"{type(model).__name__} has no global pooling module "
                     f"({' / '.join(POOL_ATTRIBUTES)}): methods frechet and gaussian and "
                     "`fgvc activations` need one")


def install_map(model: nn.Module, params: list[float] | None = None) -> PooledAffineMap:
    """Wrap the pooling module (once) and set the map's parameters."""
    path = pool_module_path(model)
    pool = getattr(model, path)
    if not isinstance(pool, PooledAffineMap):
        param = next(model.parameters())
        pool = PooledAffineMap(pool).to(param.device)
        setattr(model, path, pool)
    if params is not None:
        pool.frechet_params.copy_(torch.tensor(params))
    return pool


def install_gaussian(model: nn.Module, path: str, shape: tuple[int, ...],
                     values: torch.Tensor | None = None) -> PreActivationMap:
    """Wrap the activation at ``path`` (once) and set the map's ``[scale, shift]``."""
    module = model.get_submodule(path)
    if not isinstance(module, PreActivationMap):
        parent, _, name = path.rpartition(".")
        param = next(model.parameters())
        module = PreActivationMap(module, shape).to(param.device)
        setattr(model.get_submodule(parent), name, module)
    if values is not None:
        module.gaussian_map.copy_(values)
    return module


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor],
                     source: str | os.PathLike = "checkpoint") -> None:
    """``load_state_dict`` that first reinstalls the maps (Fréchet, Gaussian) the checkpoint
    carries, so that their buffers have a module to go to; a state that does not fit is one
    line naming ``source``."""
    for key, value in state.items():
        if key.endswith(f".{MAP_BUFFER}"):
            install_map(model)
        elif key.endswith(f".{GAUSSIAN_BUFFER}"):
            install_gaussian(model, key[: -len(GAUSSIAN_BUFFER) - 1], tuple(value.shape))
    load_exactly(model, state, source)


def adapted_bns(model: nn.Module, stage) -> list[nn.Module]:
    """BNs inside the stage's adapted groups and its ``reestimate`` modules."""
    return adapted_batchnorms(model, plan_trainable(model, stage.trainable, stage.reestimate))


@torch.no_grad()
def reestimate_bn_statistics(ctx, stage) -> int:
    """``bn_stats``: returns the number of images seen. Labels are never read."""
    model = ctx.model
    bns = adapted_bns(model, stage)
    if not bns:
        raise RecipeError(f"stages.{stage.name}: method bn_stats found no batch-norm in "
                          f"{stage.trainable}{' + ' + str(stage.reestimate) if stage.reestimate else ''}")
    model.eval()
    for bn in bns:
        bn.momentum = stage.bn_momentum
        if stage.bn_momentum is None:
            bn.reset_running_stats()
        bn.train()
    seen = 0
    for epoch in range(max(1, stage.epochs)):
        seed_everything(epoch_seed(ctx.recipe.seed, epoch, current().rank))
        loader = ctx.train_loader(stage, epoch, drop_last=False, sampler_cfg=None)
        prepare = getattr(loader, "device_transform", None)  # uint8 -> model input
        for images, _labels, _, _ in progress(loader, desc=f"{stage.name} bn_stats {epoch + 1}",
                                              unit="batch"):
            if len(images):
                model(to_device(images, ctx.device, ctx.recipe.model.channels_last, prepare))
                seen += len(images)
    model.eval()
    _average_across_processes(bns)
    return seen


def _average_across_processes(bns: list[nn.Module]) -> None:
    """Under torchrun each process saw its shard: average the estimates so all agree."""
    env = current()
    if not env.enabled:
        return
    import torch.distributed as dist

    for bn in bns:
        for buf in (bn.running_mean, bn.running_var):
            dist.all_reduce(buf)
            buf /= env.world_size


@torch.no_grad()
def run_hooked(model: nn.Module, loader, device: torch.device, channels_last: bool,
               hook: Callable[[], torch.utils.hooks.RemovableHandle],
               max_images: int | None = None, desc: str = "pass") -> int:
    """Forward ``loader``'s images (eval mode, autocast as the run evaluates) while the hook
    that ``hook()`` registers records what it needs; returns the images seen (crops count)."""
    handle = hook()
    model.eval()
    seen = 0
    try:
        prepare = getattr(loader, "device_transform", None)  # uint8 -> model input
        for images, _, _, _ in progress(loader, desc=desc, unit="batch"):
            if images.ndim == 5:
                images = images.flatten(0, 1)
            if len(images):
                with autocast(device):  # the network as the run evaluates it
                    model(to_device(images, device, channels_last, prepare))
                seen += len(images)
            if max_images is not None and seen >= max_images:
                break
    finally:
        handle.remove()
    if not seen:
        raise DatasetError(f"{desc}: no readable image")
    return seen


def pooled_features(model: nn.Module, loader, device: torch.device, channels_last: bool = True,
                    max_images: int | None = None, desc: str = "pooled") -> torch.Tensor:
    """The global pooling's output (after a Fréchet map, if installed) for ``loader``'s images,
    as a float32 (images x channels) CPU tensor; crops count as images."""
    chunks: list[torch.Tensor] = []
    pool = getattr(model, pool_module_path(model))
    run_hooked(model, loader, device, channels_last, lambda: pool.register_forward_hook(
        lambda _m, _i, out: chunks.append(out.detach().float().flatten(1).cpu())),
        max_images, desc)
    feats = torch.cat(chunks)
    return feats[:max_images] if max_images is not None else feats


def fit_frechet_map(ctx, stage) -> dict:
    """``frechet``: fit at K_train and K_test on ``data_split``, install the map."""
    from fgvc.analysis.frechet import fit_frechet

    model = ctx.model
    split = stage.data_split or ctx.recipe.dataset.train_split
    fits = {}
    for key, res in (("reference", reference_resolution(ctx.recipe, stage)),
                     ("test", stage.resolution)):
        loader = ctx.eval_loader(split, res, ctx.recipe.evaluate.batch_size)
        feats = pooled_features(model, loader, ctx.device, ctx.recipe.model.channels_last,
                                desc=f"{stage.name} frechet @{res}")
        fits[key] = fit_frechet(feats.numpy())
        log.info("%s: Fréchet fit at %d px on %r: mu %.4f sigma %.4f (%d non-zero values, "
                 "%.1f%% zeros)", stage.name, res, split, fits[key].mu, fits[key].sigma,
                 fits[key].samples, 100 * fits[key].zeros)
    # Under torchrun each process saw its shard: every process uses the main process's fit.
    ref, test = broadcast_object((fits["reference"], fits["test"]))
    install_map(model, [test.mu, test.sigma, ref.mu, ref.sigma])
    return {"xi": ref.xi, "split": split,
            "reference": {"resolution": reference_resolution(ctx.recipe, stage), **vars(ref)},
            "test": {"resolution": stage.resolution, **vars(test)}}


def last_activation(model: nn.Module, resolution: int, device: torch.device
                    ) -> tuple[str, torch.Size]:
    """The path of the module whose output is the very tensor the global pooling reads, and
    the shape of that module's input, from one probe forward: module names cannot say which
    activation runs last, the forward code does. Modules that hand their input on unchanged
    (``Identity``, ``Dropout`` in eval mode) after it are passed over. It must be an activation
    module (or a map installed on one) called once per forward: of a shared one (torchvision's
    Bottleneck calls one ReLU three times) the last call cannot be adapted alone."""
    pool_path = pool_module_path(model)
    candidates = {name: m for name, m in model.named_modules()
                  if name and name != pool_path and not name.startswith(pool_path + ".")
                  and (isinstance(m, PreActivationMap)
                       or not (list(m.children()) or _inside_map(model, name)))}
    calls: dict[str, int] = {}
    outputs: list[tuple[str, torch.Tensor, torch.Size]] = []
    found: list[tuple[str, torch.Size]] = []

    def record(name: str):
        def hook(module, args, out):
            calls[name] = calls.get(name, 0) + 1
            handed_on = out is args[0] and not _is_activation(module)
            if args and isinstance(args[0], torch.Tensor) and not handed_on:
                outputs.append((name, out, args[0].shape))
        return hook

    def at_pool(_m, args):  # the latest module whose output is the tensor pooled
        found.extend((n, shape) for n, out, shape in reversed(outputs) if out is args[0])

    handles = [m.register_forward_hook(record(n)) for n, m in candidates.items()]
    handles.append(getattr(model, pool_path).register_forward_pre_hook(at_pool))
    probe = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(probe.to(device))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return _check_last_activation(model, candidates, calls, found, pool_path)


def _check_last_activation(model, candidates, calls, found, pool_path) -> tuple[str, torch.Size]:
    arch = type(model).__name__
    if not found:
        raise NoLastActivation(f"method gaussian: no module of {arch} outputs the tensor its "
                               f"pooling ({pool_path}) reads; appendix A.2 adapts the input of "
                               "the activation right before the pooling")
    path, shape = found[0]
    if not _is_activation(candidates[path]):
        raise NoLastActivation(f"method gaussian: {path} ({type(candidates[path]).__name__}) "
                               f"feeds the pooling of {arch} and is not an activation; appendix "
                               "A.2 adapts the input of the last ReLU")
    if calls[path] != 1:
        raise NoLastActivation(f"method gaussian: {path}, the activation before the pooling of "
                               f"{arch}, runs {calls[path]} times per forward (one module "
                               "shared by several calls), so its last call cannot be adapted "
                               "alone")
    if len(shape) not in (2, 4):
        raise NoLastActivation(f"method gaussian: {path} reads {len(shape)}-D tensors; only "
                               "(batch, channels, height, width) or (batch, channels) are "
                               "mapped channel by channel")
    return path, shape


def _is_activation(module: nn.Module) -> bool:
    """An activation module of torch or timm, or the Gaussian map installed on one."""
    act = module.act if isinstance(module, PreActivationMap) else module
    return type(act).__module__.startswith(ACTIVATION_MODULES)


def _inside_map(model: nn.Module, name: str) -> bool:
    """``name`` is a module inside an installed PreActivationMap (its wrapped activation)."""
    parent = name.rpartition(".")[0]
    while parent:
        if isinstance(model.get_submodule(parent), PreActivationMap):
            return True
        parent = parent.rpartition(".")[0]
    return False


def channel_moments(model: nn.Module, path: str, loader, device: torch.device,
                    channels_last: bool, desc: str):
    """Per-channel moments (``fgvc.analysis.gaussian.ChannelMoments``) of what enters the
    module at ``path`` (a map installed there: its input, before the map), over every image of
    ``loader`` and every process's shard, and the fraction of those values above 0 (what a
    ReLU lets through)."""
    from fgvc.analysis.gaussian import ChannelMoments, merge_all

    module = model.get_submodule(path)
    parts: list[ChannelMoments] = []
    positive = [0, 0]

    def hook(_m, args):  # before the module runs: an in-place ReLU would overwrite its input
        x = args[0].detach().float()
        dims = (0, 2, 3) if x.ndim == 4 else (0,)
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        count = x.numel() // x.shape[1]
        parts.append(ChannelMoments(count, mean.double().cpu().numpy(),
                                    (var.double() * count).cpu().numpy()))
        positive[0] += int((x > 0).sum())
        positive[1] += x.numel()

    run_hooked(model, loader, device, channels_last,
               lambda: module.register_forward_pre_hook(hook), desc=desc)
    shards = gather_objects((parts, positive))  # under torchrun each process saw its shard
    moments = merge_all([p for part, _ in shards for p in part])
    return moments, sum(p[0] for _, p in shards) / max(sum(p[1] for _, p in shards), 1)


def fit_gaussian_map(ctx, stage) -> dict:
    """``gaussian``: per-channel Gaussians of the last activation's input on ``data_split`` at
    K_train and at K_test, and the map between them installed on that input."""
    from fgvc.analysis.gaussian import matching_map

    model, recipe = ctx.model, ctx.recipe
    split = stage.data_split or recipe.dataset.train_split
    path, shape = last_activation(model, stage.resolution, ctx.device)
    fits, moments = {}, {}
    for key, res in (("reference", reference_resolution(recipe, stage)),
                     ("test", stage.resolution)):
        loader = ctx.eval_loader(split, res, recipe.evaluate.batch_size)
        moments[key], positive = channel_moments(model, path, loader, ctx.device,
                                                 recipe.model.channels_last,
                                                 f"{stage.name} gaussian @{res}")
        fits[key] = {"resolution": res, "values_per_channel": moments[key].count,
                     "positive": positive, "mean": moments[key].mean.tolist(),
                     "std": moments[key].std.tolist()}
        log.info("%s: input of %s at %d px on %r: channel means %.4f and stds %.4f on average, "
                 "%.1f%% of values > 0", stage.name, path, res, split,
                 float(moments[key].mean.mean()), float(moments[key].std.mean()), 100 * positive)
    scale, shift = matching_map(moments["test"], moments["reference"])
    layout = (shape[1], *([1] * (len(shape) - 2)))  # broadcasts over (B, C, H, W) or (B, C)
    install_gaussian(model, path, (2, *layout),
                     torch.tensor(np.stack([scale, shift]), dtype=torch.float32).view(2, *layout))
    return {"module": path, "channels": int(shape[1]), "split": split, **fits,
            "scale": scale.tolist(), "shift": shift.tolist()}


def reference_resolution(recipe, stage) -> int:
    train = recipe.stage("train")
    if stage.reference_resolution is not None:
        return stage.reference_resolution
    if train is None:
        raise RecipeError(f"stages.{stage.name}.reference_resolution: method {stage.method} "
                          "needs K_train (no train stage in this recipe)")
    return train.resolution


def run_label_free(ctx, stage) -> None:
    """Run a ``bn_stats``, ``frechet`` or ``gaussian`` stage and save its final checkpoint."""
    details: dict = {"method": stage.method}
    if stage.method == "bn_stats":
        details["images"] = reestimate_bn_statistics(ctx, stage)
        details["split"] = stage.data_split or ctx.recipe.dataset.train_split
        log.info("%s: BN statistics re-estimated at %d px over %d images of %r (no labels)",
                 stage.name, stage.resolution, details["images"], details["split"])
    elif stage.method == "gaussian":
        details.update(fit_gaussian_map(ctx, stage))
    else:
        details.update(fit_frechet_map(ctx, stage))
    if current().is_main:
        atomic_write(ctx.folder.adaptation_record(stage.name, stage.method),
                     json.dumps(details, indent=2) + "\n")
        save_checkpoint(ctx.final_checkpoint(stage), {
            "model": ctx.model.state_dict(), "stage": stage.name, "method": stage.method,
            "resolution": stage.resolution, "arch": ctx.recipe.model.arch,
            "category_ids": list(ctx.index.category_ids)})
    barrier()
