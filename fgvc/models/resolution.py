"""Can this network run at these resolutions? Asked on the meta device, answered in one line.

``fgvc validate`` builds every model on PyTorch's meta device; a forward pass there costs no
memory and almost no time, so every resolution a recipe uses (stages, evaluation, prediction)
is tried before any data is read. A size the network cannot take (a ViT patch that does not
divide it, a network too deep for a tiny input) becomes one ``ResolutionError`` line naming
the model, the size, the reason and the nearest sizes that work, instead of a traceback
mid-run.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from fgvc.errors import FgvcError
from fgvc.models.config import ModelConfig

# Grids tried around a failing size for the "nearest sizes that work" hint: patch sizes and
# total strides.
_GRIDS = (8, 14, 16, 32)


class ResolutionError(FgvcError, ValueError):
    """The model cannot run at a requested input size; the message says why and what would."""


class ModelBuildError(FgvcError, ValueError):
    """The architecture cannot be built with fgvc's settings; the message says why."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class _SkipInitOnMeta(TorchDispatchMode):
    """Weight initialisation on the meta device computes nothing but still costs its Python
    decompositions (half of building a large model there). In-place ops on meta tensors
    return their input instead; those that change a tensor's shape or strides still run."""

    SHAPING = {"resize_", "resize_as_", "as_strided_", "squeeze_", "unsqueeze_", "transpose_",
               "t_", "set_", "swapdims_", "swapaxes_", "requires_grad_", "detach_"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if (name.endswith("_") and name not in self.SHAPING and args
                and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def meta_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The network on the meta device, without weights; any failure as one line."""
    from fgvc.models.factory import create_model
    from fgvc.models.weights import WeightsError

    cfg = dataclasses.replace(cfg, pretrained="none", weights=None)
    try:
        with _SkipInitOnMeta(), torch.device("meta"):
            return create_model(cfg, num_classes)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - any builder failure becomes one clear line
        raise ModelBuildError(f"model {cfg.arch!r} cannot be built: {_first_line(err)}") from None


def runs_at(model: nn.Module, size: int) -> str | None:
    """None when a meta-device forward pass at ``size`` px works; otherwise why not."""
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("meta")
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    except Exception as err:  # noqa: BLE001 - the reason is reported, not swallowed
        return _first_line(err)
    finally:
        model.train(was_training)
    return None


def _candidates(size: int) -> tuple[list[int], list[int]]:
    """Sizes below and above ``size`` on the grids networks usually need (multiples of their
    patch or total stride), nearest first: a handful of probes, not a scan."""
    below = {size // m * m for m in _GRIDS if size // m * m not in (0, size)}
    above = {(size // m + 1) * m for m in _GRIDS}
    return sorted(below, reverse=True), sorted(above)


def nearest_working(model: nn.Module, size: int) -> list[int]:
    """The closest size below and above ``size`` that run (either may be missing)."""
    below, above = _candidates(size)
    found_below = next((s for s in below if runs_at(model, s) is None), None)
    found_above = next((s for s in above if runs_at(model, s) is None), None)
    return [s for s in (found_below, found_above) if s is not None]


def check_resolutions(model: nn.Module, arch: str, sizes: list[int]) -> None:
    """Raise ``ResolutionError`` for the first size in ``sizes`` the model cannot run at."""
    for size in dict.fromkeys(sizes):
        why = runs_at(model, size)
        if why is None:
            continue
        hint = nearest_working(model, size)
        built = native_size(model)
        if hint:
            use = f"; nearest sizes that work: {' or '.join(f'{s} px' for s in hint)}"
        elif built != size and runs_at(model, built) is None:
            use = (f"; this family runs only at the size it is built for ({built} px; timm gives "
                   "it no dynamic image size): set model.img_size to build it for another, "
                   "one size per run")
        else:
            use = "; no nearby size works"
        raise ResolutionError(f"model {arch!r} cannot run at {size} px ({why}){use}")


def native_size(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return int(cfg.get("input_size", (3, 224, 224))[-1])


def validate_arch(arch: str, sizes: list[int] | None = None,
                  groups: tuple[str, ...] = ("classifier", "last_bn")) -> nn.Module:
    """What ``fgvc validate`` asks of a model, for one name: built on the meta device, run at
    ``sizes`` (default 1.5 times its own size), its default adaptation groups resolved by
    tracing a forward pass at the first size (one pass serves both checks).
    Fails only with fgvc's one-line errors."""
    from fgvc.models.groups import GroupError, resolve_groups

    model = meta_model(ModelConfig(arch=arch), 1000)
    sizes = sizes or [native_size(model) * 3 // 2]
    check_resolutions(model, arch, sizes[1:])
    model.fgvc_probe_resolution = sizes[0]  # the group tracing's forward pass checks this one
    try:
        resolve_groups(model, list(groups))
    except GroupError as err:
        check_resolutions(model, arch, sizes[:1])  # a size problem is reported as one
        raise GroupError(f"model {arch!r}: {err}") from None
    finally:
        del model.fgvc_probe_resolution
    return model
