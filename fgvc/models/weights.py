"""Load weights from the common checkpoint shapes without ever unpickling code."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from fgvc.errors import WeightsError  # defined without torch, for the CLI
from fgvc.io.atomic import cause, checksum_problem

log = logging.getLogger(__name__)
WRAPPER_KEYS = ("model", "state_dict", "model_state")
DDP_PREFIX = "module."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a .safetensors file or a torch checkpoint (plain or wrapped); a
    missing, empty, text, damaged or refused file is one line naming it and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    not_weights = _not_weights(path)
    if not_weights:
        raise WeightsError(f"{path}: {not_weights}, not weights (a safetensors file or a torch "
                           "checkpoint)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors' own error types, one line each
            raise WeightsError(f"cannot read {path} as safetensors: the file is damaged or "
                               f"incomplete ({cause(err)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal becomes one clear message
        from fgvc.engine.checkpoint import describe_load_failure

        raise WeightsError(f"cannot read {path} as a weights-only checkpoint: "
                           f"{describe_load_failure(err)}") from None
    damage = checksum_problem(obj) if isinstance(obj, dict) else None  # an fgvc checkpoint
    if damage is not None:
        raise WeightsError(f"{path} is damaged: {damage}")
    return unwrap_state_dict(obj, path)


def _not_weights(path: Path) -> str | None:
    """What the file is instead, when its first bytes show it at once: empty, or text (a page a
    failed download saved, a path or a note given by mistake). Weights files are binary: a zip
    (torch), a pickle, or safetensors' 8-byte header length, whose high bytes are zero."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if b"\0" in head:
        return None
    try:  # incremental: a character cut at byte 512 is no reason to call the file binary
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return None
    start = " ".join(text.split())[:40]
    return f"a text file (it starts {start!r})"


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


def fit_problem(model: nn.Module, state: Mapping[str, torch.Tensor],
                absent_ok: frozenset[str] | set[str] = frozenset()) -> str | None:
    """What keeps ``state`` from loading into ``model`` exactly (names absent or extra, shapes
    that differ), in one line; None when it fits. ``absent_ok``: names it may lack."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in absent_ok]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    parts = [f"{len(found)} {what} (e.g. {', '.join(found[:3])})" for found, what in
             ((missing, "tensor(s) missing"), (extra, "unknown tensor(s)"),
              (shapes, "of another shape")) if found]
    return "; ".join(parts) or None


def load_exactly(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path | str,
                 absent_ok: frozenset[str] | set[str] = frozenset()) -> None:
    """``model.load_state_dict(state)``, strict but for ``absent_ok``; a state of another
    architecture or class count is one line naming ``source``, not torch's multi-line list."""
    problem = fit_problem(model, state, absent_ok)
    if problem is not None:
        raise WeightsError(f"{source}: does not fit {type(model).__name__} ({problem}); is it "
                           "for another architecture or number of classes?")
    model.load_state_dict(state, strict=not absent_ok)


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
