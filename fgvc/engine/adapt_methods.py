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
"""

from __future__ import annotations

import json
import logging

import torch
import torch.nn as nn

from fgvc.engine.checkpoint import save_checkpoint
from fgvc.engine.device import autocast
from fgvc.engine.distributed import barrier, broadcast_object, current
from fgvc.engine.freeze import adapted_batchnorms, plan_trainable
from fgvc.engine.seeding import epoch_seed, seed_everything
from fgvc.engine.transfer import to_device
from fgvc.errors import FgvcError
from fgvc.io.atomic import atomic_write
from fgvc.progress import progress

log = logging.getLogger(__name__)

POOL_ATTRIBUTES = ("global_pool", "avg_pool", "avgpool")  # timm, Cadene, torchvision
MAP_BUFFER = "frechet_params"


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
        mu0, sigma0, mu_ref, sigma_ref = self.frechet_params.to(y.dtype)
        return torch.where(y > 0, mu_ref + sigma_ref / sigma0 * (y - mu0), y)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # timm asks its pool for flatten/is_identity etc.
            return getattr(super().__getattr__("pool"), name)


class NoPoolingModule(FgvcError, ValueError):
    """The model has no global pooling module to hook or wrap."""


def pool_module_path(model: nn.Module) -> str:
    """Where the global pooling lives (its output is what the classifier reads)."""
    for name in POOL_ATTRIBUTES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise NoPoolingModule(f"{type(model).__name__} has no global pooling module "
                     f"({' / '.join(POOL_ATTRIBUTES)}): method frechet and `fgvc activations` "
                     "need one")


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


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that first reinstalls a Fréchet map the checkpoint carries."""
    if any(key.endswith(f".{MAP_BUFFER}") for key in state):
        install_map(model)
    model.load_state_dict(state)


def adapted_bns(model: nn.Module, stage) -> list[nn.Module]:
    """BNs inside the stage's adapted groups and its ``reestimate`` modules."""
    return adapted_batchnorms(model, plan_trainable(model, stage.trainable, stage.reestimate))


@torch.no_grad()
def reestimate_bn_statistics(ctx, stage) -> int:
    """``bn_stats``: returns the number of images seen. Labels are never read."""
    model = ctx.model
    bns = adapted_bns(model, stage)
    if not bns:
        raise ValueError(f"stages.{stage.name}: method bn_stats found no batch-norm in "
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
def pooled_features(model: nn.Module, loader, device: torch.device, channels_last: bool = True,
                    max_images: int | None = None, desc: str = "pooled") -> torch.Tensor:
    """The global pooling's output (after a Fréchet map, if installed) for ``loader``'s images,
    as a float32 (images x channels) CPU tensor; crops count as images."""
    chunks: list[torch.Tensor] = []
    handle = getattr(model, pool_module_path(model)).register_forward_hook(
        lambda _m, _i, out: chunks.append(out.detach().float().flatten(1).cpu()))
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
    if not chunks:
        raise RuntimeError(f"{desc}: no readable image")
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


def reference_resolution(recipe, stage) -> int:
    train = recipe.stage("train")
    if stage.reference_resolution is not None:
        return stage.reference_resolution
    if train is None:
        raise ValueError(f"stages.{stage.name}.reference_resolution: method frechet needs "
                         "K_train (no train stage in this recipe)")
    return train.resolution


def run_label_free(ctx, stage) -> None:
    """Run a ``bn_stats`` or ``frechet`` stage and save its final checkpoint."""
    details: dict = {"method": stage.method}
    if stage.method == "bn_stats":
        details["images"] = reestimate_bn_statistics(ctx, stage)
        details["split"] = stage.data_split or ctx.recipe.dataset.train_split
        log.info("%s: BN statistics re-estimated at %d px over %d images of %r (no labels)",
                 stage.name, stage.resolution, details["images"], details["split"])
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
