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

from fgvc.recipes.recipe import ModelConfig

# Sizes tried around a failing one, nearest first, for the "use ... instead" hint.
_HINT_STEPS = range(1, 33)


class ResolutionError(ValueError):
    """The model cannot run at a requested input size; the message says why and what would."""


class ModelBuildError(ValueError):
    """The architecture cannot be built with fgvc's settings; the message says why."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def meta_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The network on the meta device, without weights; any failure as one line."""
    from fgvc.models.factory import create_model
    from fgvc.models.weights import WeightsError

    cfg = dataclasses.replace(cfg, pretrained="none", weights=None)
    try:
        with torch.device("meta"):
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


def nearest_working(model: nn.Module, size: int) -> list[int]:
    """The closest size below and above ``size`` that run (either may be missing)."""
    below = next((size - d for d in _HINT_STEPS if size - d > 0 and runs_at(model, size - d)
                  is None), None)
    above = next((size + d for d in _HINT_STEPS if runs_at(model, size + d) is None), None)
    return [s for s in (below, above) if s is not None]


def check_resolutions(model: nn.Module, arch: str, sizes: list[int]) -> None:
    """Raise ``ResolutionError`` for the first size in ``sizes`` the model cannot run at."""
    for size in dict.fromkeys(sizes):
        why = runs_at(model, size)
        if why is None:
            continue
        hint = nearest_working(model, size)
        use = (f"; nearest sizes that work: {' or '.join(f'{s} px' for s in hint)}" if hint
               else "; no nearby size works")
        raise ResolutionError(f"model {arch!r} cannot run at {size} px ({why}){use}")
