"""Load weights from the common checkpoint shapes without ever unpickling code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)
WRAPPER_KEYS = ("model", "state_dict", "model_state")
DDP_PREFIX = "module."


class WeightsError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message says which and why."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a .safetensors file or a torch checkpoint (plain or wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal becomes one clear message
        from fgvc.engine.checkpoint import describe_load_failure

        raise WeightsError(f"cannot read {path} as a weights-only checkpoint: "
                           f"{describe_load_failure(err)}") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, source: Path | str = "<checkpoint>") -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return unwrap_state_dict(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            if all(k.startswith(DDP_PREFIX) for k in tensors):
                tensors = {k[len(DDP_PREFIX):]: v for k, v in tensors.items()}
            return tensors
    raise WeightsError(
        f"{source}: no state_dict found (expected tensors by name, or one under "
        f"{', '.join(repr(k) for k in WRAPPER_KEYS)})"
    )


# Names classifiers go by in common checkpoints: Cadene's, torchvision's/timm's, timm's others.
CLASSIFIER_NAMES = ("last_linear", "fc", "classif", "classifier", "head.fc", "head")


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    from fgvc.models.groups import classifier_paths

    return tuple(f"{p}." for p in classifier_paths(model))


def rename_classifier(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Cadene checkpoints call the classifier ``last_linear``, timm ports ``fc`` or ``classif``
    (and vice versa): move the checkpoint's classifier onto the model's, when only that differs."""
    own = set(model.state_dict())
    (target,) = classifier_prefixes(model)[:1] or ("",)
    for name in CLASSIFIER_NAMES:
        prefix = f"{name}."
        theirs = [k for k in state if k.startswith(prefix)]
        if prefix == target or not theirs or any(k in own for k in theirs):
            continue
        if {k[len(prefix):] for k in theirs} <= {k[len(target):] for k in own if k.startswith(target)}:
            renamed = {target + k[len(prefix):] if k.startswith(prefix) else k: v
                       for k, v in state.items()}
            log.info("renamed checkpoint classifier %s* -> %s*", prefix, target)
            return renamed
    return state


def timm_checkpoint_filter(state: dict[str, torch.Tensor], model: nn.Module
                           ) -> dict[str, torch.Tensor]:
    """timm's own conversion for the model's family (``checkpoint_filter_fn`` in its module):
    position embeddings and relative position tables resampled to the model's size, original
    release layouts (DINOv2, EVA, Swin) mapped to timm's. Models without one pass unchanged."""
    import sys

    module = sys.modules.get(type(model).__module__)
    convert = getattr(module, "checkpoint_filter_fn", None)
    if convert is None or not type(model).__module__.startswith("timm."):
        return state
    try:
        return convert(dict(state), model)
    except Exception as err:  # noqa: BLE001 - a failed conversion leaves the shape checks to speak
        log.info("timm's checkpoint conversion for %s did not apply (%s)", type(model).__name__, err)
        return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model``; a classifier of another shape is left freshly initialised.

    Anything missing outside the classifier is an error: a silently half-loaded backbone wastes
    a whole training run. The one exception: a head the model declares new
    (``new_head_modules``, e.g. MPN-COV's reduction layer) may be absent as a whole, as it is
    from a plain ImageNet backbone checkpoint.
    """
    state = timm_checkpoint_filter(rename_classifier(read_state_dict(path), model), model)
    own = model.state_dict()
    head = classifier_prefixes(model)
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    bad_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in skipped
                 if not k.startswith(head)]
    if bad_shape:
        raise WeightsError(f"{path}: shape mismatch for {', '.join(bad_shape[:5])}")
    state = {k: v for k, v in state.items() if k not in skipped}
    result = model.load_state_dict(state, strict=False)
    # Checkpoints saved before PyTorch 0.4 have no BN batch counters; they hold no weights.
    missing = [k for k in result.missing_keys
               if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    for module in getattr(model, "new_head_modules", ()):
        prefix = f"{module}."
        if not any(k.startswith(prefix) for k in state):
            missing = [k for k in missing if not k.startswith(prefix)]
            log.info("%s: %s is not in the checkpoint and starts new", path, module)
    if missing:
        strict = getattr(model, "strict_checkpoint", False)
        raise WeightsError(
            f"{path}: {len(missing)} model tensor(s) missing from the checkpoint: "
            f"{', '.join(missing if strict else missing[:5])}"
            f"{'' if strict or len(missing) <= 5 else ', ...'}; "
            "is this checkpoint for another architecture?"
        )
    if result.unexpected_keys and getattr(model, "strict_checkpoint", False):
        raise WeightsError(
            f"{path}: {len(result.unexpected_keys)} checkpoint tensor(s) would go unused: "
            f"{', '.join(result.unexpected_keys)}; {type(model).__name__} loads a checkpoint "
            "only when every tensor is used"
        )
    if result.unexpected_keys:
        log.warning("%s: ignored %d unexpected key(s), e.g. %s", path,
                    len(result.unexpected_keys), ", ".join(result.unexpected_keys[:5]))
    if skipped or any(k.startswith(head) for k in result.missing_keys):
        log.info("%s: classifier left new (class count differs from the checkpoint)", path)
