"""Which modules stage 2 adapts: named groups resolved per architecture, or explicit paths.

- ``classifier``: the final linear layer.
- ``last_bn``: the normalisation layer that feeds the global pooling, found by running the model
  once and keeping the last normalisation layer executed before the classifier (ResNet/SENet:
  the last block's last BN; EfficientNet: ``bn2``; Inception-ResNet-V2: ``conv2d_7b.bn``).
- ``last_stage``: the last stage of the backbone, from a per-family table.
"""

from __future__ import annotations

import difflib

import torch
import torch.nn as nn

from fgvc.errors import GroupError  # defined without torch, for the CLI

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)

# Family -> how its last stage is named. The first entry whose modules all exist wins.
LAST_STAGE_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("layer4",),                            # ResNet, ResNeXt, SENet, SE-ResNeXt (timm and Cadene)
    ("cell_9", "cell_10", "cell_11"),       # PNASNet-5-Large: the last three cells
    ("block8",),                            # Inception-ResNet-V2 (timm): the last block
    ("stages.3",),                          # ConvNeXt, RegNet-style stages
)


def module_path(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise GroupError("module not found in model")


def classifier_paths(model: nn.Module) -> list[str]:
    """The final linear layer: timm's ``get_classifier()``, Cadene's ``last_linear``."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None and hasattr(model, "last_linear"):
        head = model.last_linear
    if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
        return [module_path(model, head)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GroupError("no classifier found (no nn.Linear in the model)")
    return [linears[-1]]


def execution_order(model: nn.Module, types: tuple[type, ...], resolution: int) -> list[str]:
    """Paths of modules of ``types`` in the order one forward pass runs them."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, types):
            handles.append(module.register_forward_hook(
                lambda _m, _i, _o, name=name: order.append(name)))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


def _probe_resolutions(model: nn.Module) -> list[int]:
    """A small probe first (cheap on the CPU); the model's own input size if that fails, for
    networks with fixed-size pooling (Cadene's PNASNet and Inception-ResNet-V2)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return [min(size, 128), size] if size > 128 else [size]


def _on_shortcut(path: str) -> bool:
    return any(part in ("downsample", "shortcut", "skip") for part in path.split("."))


def last_bn_paths(model: nn.Module) -> list[str]:
    """The last main-path norm run, plus any shortcut norm run after it (both feed the pool)."""
    *smaller, largest = _probe_resolutions(model)
    for resolution in smaller:
        try:
            norms = execution_order(model, NORM_TYPES, resolution)
            break
        except RuntimeError:
            continue
    else:
        norms = execution_order(model, NORM_TYPES, largest)
    main = [i for i, path in enumerate(norms) if not _on_shortcut(path)]
    if not main:
        raise GroupError("the model runs no normalisation layer, so it has no 'last_bn' group")
    return norms[main[-1]:]


def last_stage_paths(model: nn.Module) -> list[str]:
    modules = dict(model.named_modules())
    for candidate in LAST_STAGE_CANDIDATES:
        if all(c in modules for c in candidate):
            return list(candidate)
    # timm models list their feature stages; the deepest one is the last stage when it has weights.
    info = getattr(model, "feature_info", None)
    deepest = info[-1].get("module") if isinstance(info, list) and info else None
    if deepest in modules and any(True for _ in modules[deepest].parameters()):
        return [deepest]
    children = ", ".join(n for n, _ in model.named_children())
    raise GroupError(
        f"no known 'last_stage' for {type(model).__name__}: name its modules explicitly in the "
        f"recipe, e.g. trainable: [classifier, last_bn, <module.path>] (top-level modules: "
        f"{children})"
    )


GROUP_RESOLVERS = {
    "classifier": classifier_paths,
    "last_bn": last_bn_paths,
    "last_stage": last_stage_paths,
}


def resolve_groups(model: nn.Module, names: list[str]) -> dict[str, list[str]]:
    """Each group name or explicit module path -> the module paths it stands for."""
    modules = dict(model.named_modules())
    resolved: dict[str, list[str]] = {}
    for name in names:
        if name in GROUP_RESOLVERS:
            resolved[name] = GROUP_RESOLVERS[name](model)
        elif name in modules and name:
            resolved[name] = [name]
        else:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise GroupError(
                f"trainable: {name!r} is neither a group ({', '.join(GROUP_RESOLVERS)}) nor a "
                f"module of {type(model).__name__}{hint}"
            )
    return resolved
