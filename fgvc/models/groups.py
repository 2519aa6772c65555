"""Which modules stage 2 adapts: named groups resolved per architecture, or explicit paths.

- ``classifier``: the final linear layer.
- ``last_bn`` / ``last_norm`` (one group, two names): the normalisation layers whose outputs
  reach the pooled features without passing through another normalisation layer, inside the
  last block the network runs. Found by following the autograd graph back from the
  classifier's input (``feeding_norms``), so branching cells are covered whole: ResNet/SENet:
  the last block's last BN (plus its shortcut BN when it has one); EfficientNet: ``bn2``;
  PNASNet-5-Large: the eight BNs of ``cell_11``; ViT/DeiT/EVA/Swin: ``norm`` or ``fc_norm``;
  ConvNeXt: ``head.norm``.
- ``last_stage``: the last stage of the backbone, from a per-family table.
- ``pos_embed``: the absolute position embedding (ViT, DeiT, EVA), re-learned at K_test.
- ``head_dropout``: the dropout module on the pooled features, before the classifier (timm's
  ``head_drop``, Cadene's ``dropout``); the authors' PNASNet fine-tuning keeps it in train mode.
- ``last_blocks: N``: the last N transformer or residual blocks, in the order they run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import torch
import torch.nn as nn

from fgvc.errors import GroupError  # defined without torch, for the CLI

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
                                nn.RMSNorm)
try:  # timm's own norms that do not subclass torch's
    from timm.layers import RmsNorm, RmsNorm2d, SimpleNorm, SimpleNorm2d

    NORM_TYPES += (RmsNorm, RmsNorm2d, SimpleNorm, SimpleNorm2d)
except ImportError:  # pragma: no cover - older timm
    pass

# Family -> how its last stage is named. The first entry whose modules all exist wins.
LAST_STAGE_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("layer4",),                            # ResNet, ResNeXt, SENet, SE-ResNeXt (timm and Cadene)
    ("cell_9", "cell_10", "cell_11"),       # PNASNet-5-Large: the last three cells
    ("block8",),                            # Inception-ResNet-V2 (timm): the last block
    ("stages.3",),                          # ConvNeXt, RegNet-style stages
)
LAST_BLOCKS = "last_blocks"
POS_EMBED_NAMES = ("pos_embed", "absolute_pos_embed", "pos_embedding", "position_embeddings")
# Where families keep the dropout on the pooled features: timm's heads, heads in a ``head``
# module (ConvNeXt), Cadene's networks. The first that exists and is a dropout module wins.
HEAD_DROPOUT_NAMES = ("head_drop", "head.drop", "dropout")


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


def _probe_resolutions(model: nn.Module) -> list[int]:
    """A small probe first (cheap on the CPU), then the model's own input size; on the meta
    device the model's own size at once. ``fgvc_probe_resolution`` on the model overrides the
    size (``validate_arch`` traces at the size it checks)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(getattr(model, "fgvc_probe_resolution", None) or cfg.get("input_size", (3, 224, 224))[-1])
    on_meta = next(model.parameters()).device.type == "meta"  # no compute: no need to go small
    return [min(size, 128), size] if size > 128 and not on_meta else [size]


def _run_probe(model: nn.Module, run: Callable[[int], None]) -> None:
    """``run(resolution)`` at the first probe resolution the network accepts."""
    *smaller, largest = _probe_resolutions(model)
    for resolution in smaller:
        try:
            return run(resolution)
        except (RuntimeError, AssertionError, ValueError):
            continue
    return run(largest)


def feeding_norms(model: nn.Module, resolution: int) -> tuple[list[str], list[str]]:
    """(every norm layer in the order it runs, the norms whose outputs reach the classifier's
    input without passing through another norm).

    Hand-written graph walk because no library offers it: forward hooks remember which autograd
    node each norm's output came from, then the walk goes back from the classifier's input and
    stops at the first norm on every path. Works on the meta device (no compute).
    """
    order: list[str] = []
    node_to_norm: dict[object, str] = {}
    pooled: list[torch.Tensor] = []

    def on_norm(name):
        def hook(_module, _inputs, output):
            order.append(name)
            if isinstance(output, torch.Tensor) and output.grad_fn is not None:
                node_to_norm[output.grad_fn] = name
        return hook

    modules = dict(model.named_modules())
    head = modules[classifier_paths(model)[0]]
    handles = [m.register_forward_hook(on_norm(n)) for n, m in model.named_modules()
               if isinstance(m, NORM_TYPES)]
    handles.append(head.register_forward_pre_hook(lambda _m, inputs: pooled.append(inputs[0])))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        x = torch.zeros(1, 3, resolution, resolution, device=param.device, dtype=param.dtype,
                        requires_grad=True)
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    found: dict[str, None] = {}
    seen: set[object] = set()
    stack = [pooled[-1].grad_fn] if pooled and pooled[-1].grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in node_to_norm:
            found[node_to_norm[node]] = None
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return order, [n for n in order if n in found]


def _inside(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def last_norm_paths(model: nn.Module) -> list[str]:
    """The norms that feed the pooled features directly: those inside the last block when the
    last of them lies in a block (ResNet, RegNet, PNASNet), else those outside every block
    (ViT's ``norm``, EfficientNet's ``bn2``, ConvNeXt's ``head.norm``)."""
    result: list[tuple[list[str], list[str]]] = []
    try:
        _run_probe(model, lambda r: result.append(feeding_norms(model, r)))
    except Exception as err:  # noqa: BLE001 - reported in one line, as every group problem is
        raise GroupError(f"cannot trace {type(model).__name__} to find its last norm "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                         ) from None
    order, feeding = result[-1]
    if not order:
        raise GroupError("the model runs no normalisation layer, so it has no 'last_norm' group")
    if not feeding:  # a norm, then ops the graph walk cannot see through (e.g. detached)
        return order[-1:]
    blocks = block_groups(model)
    holding = [b for b in blocks if _inside(feeding[-1], b)]
    if holding:
        return [p for p in feeding if _inside(p, holding[-1])]
    every_block = [p for b in blocks for p in b]
    return [p for p in feeding if not _inside(p, every_block)] or feeding[-1:]


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


def pos_embed_paths(model: nn.Module) -> list[str]:
    """Absolute position embeddings (parameters, so the paths are parameter names)."""
    found = [name for name, _ in model.named_parameters()
             if name.split(".")[-1] in POS_EMBED_NAMES]
    if not found:
        raise GroupError(f"{type(model).__name__} has no absolute position embedding "
                         f"(no parameter named {', '.join(POS_EMBED_NAMES)})")
    return found


def head_dropout_paths(model: nn.Module) -> list[str]:
    """The dropout module applied to the pooled features before the classifier."""
    modules = dict(model.named_modules())
    for name in HEAD_DROPOUT_NAMES:
        if isinstance(modules.get(name), nn.Dropout):
            return [name]
    raise GroupError(f"{type(model).__name__} has no dropout module before its classifier "
                     f"(looked for {', '.join(HEAD_DROPOUT_NAMES)}; timm's ResNets apply "
                     "dropout as a function, which has no train mode of its own)")


def _matcher_blocks(model: nn.Module) -> list[list[str]] | None:
    """Blocks from timm's ``group_matcher`` (the grouping its layer-wise decay uses), without
    the stem, the final norm folded into the last block (suffix 99999), or the head. Each
    block is the module prefixes its patterns matched (Swin: a stage's downsample with its
    first block, as timm groups them)."""
    if not hasattr(model, "group_matcher"):
        return None
    from timm.models._manipulate import MATCH_PREV_GROUP, group_modules

    try:
        matcher = model.group_matcher(coarse=False)
    except (TypeError, NotImplementedError):
        return None
    if not isinstance(matcher, dict) or not matcher.get("blocks"):
        return None
    specs = matcher["blocks"]
    specs = [(specs, None)] if isinstance(specs, str) else list(specs)
    patterns = [re.compile(s) for s, suffix in specs if suffix != MATCH_PREV_GROUP]
    out = []
    for _, names in sorted(group_modules(model, matcher).items()):
        prefixes = []
        for name in names:
            match = next((m for r in patterns if (m := r.match(name))), None)
            if match:
                prefixes.append(match.group(0).rstrip("."))
        if prefixes:
            out.append(list(dict.fromkeys(prefixes)))
    return out or None


def _container_blocks(model: nn.Module) -> list[list[str]]:
    """Fallback for models without timm's dict grouping (Cadene's, Inception-ResNet-V2): the
    outermost modules of the classes held in Sequential/ModuleList containers (SENet's
    bottlenecks, Inception-ResNet's Block35/17/8), else the root's repeated children of one
    class (PNASNet's cells), in definition order."""
    def composite(m: nn.Module) -> bool:
        return any(True for _ in m.children()) and any(True for _ in m.parameters()) and \
            not isinstance(m, (nn.Sequential, nn.ModuleList))

    classes = {type(child) for module in model.modules()
               if isinstance(module, (nn.Sequential, nn.ModuleList))
               for child in module.children() if composite(child)}
    if not classes:
        counts: dict[type, int] = {}
        for child in model.children():
            if composite(child):
                counts[type(child)] = counts.get(type(child), 0) + 1
        classes = {cls for cls, n in counts.items() if n > 1}
    items = [name for name, module in model.named_modules() if name and type(module) in classes]
    return [[p] for p in items if not any(p.startswith(q + ".") for q in items)]


def block_groups(model: nn.Module) -> list[list[str]]:
    """Every block of the network in the order it runs, each as its module paths."""
    return _matcher_blocks(model) or _container_blocks(model)


def last_blocks_paths(model: nn.Module, count: int) -> list[str]:
    blocks = block_groups(model)
    if not blocks:
        raise GroupError(f"no blocks found in {type(model).__name__}: name its modules "
                         "explicitly in trainable")
    if count > len(blocks):
        raise GroupError(f"last_blocks: {count} asks for more blocks than "
                         f"{type(model).__name__} has ({len(blocks)})")
    return [p for block in blocks[-count:] for p in block]


GROUP_RESOLVERS: dict[str, Callable[[nn.Module], list[str]]] = {
    "classifier": classifier_paths,
    "last_bn": last_norm_paths,
    "last_norm": last_norm_paths,
    "last_stage": last_stage_paths,
    "pos_embed": pos_embed_paths,
    "head_dropout": head_dropout_paths,
}


def group_key(item: str | dict) -> str:
    """How a trainable item is named in plans and reports: ``last_blocks: 2`` stays readable."""
    if isinstance(item, dict):
        return ", ".join(f"{k}: {v}" for k, v in item.items())
    return item


def resolve_groups(model: nn.Module, names: list[str | dict]) -> dict[str, list[str]]:
    """Each group name, ``{last_blocks: N}`` or explicit module path -> the paths it stands for
    (module paths; parameter names for ``pos_embed``)."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    resolved: dict[str, list[str]] = {}
    for name in names:
        if isinstance(name, dict):
            if set(name) != {LAST_BLOCKS}:
                raise GroupError(f"trainable: {name!r}: the only mapping item is "
                                 f"{{{LAST_BLOCKS}: N}}")
            resolved[group_key(name)] = last_blocks_paths(model, int(name[LAST_BLOCKS]))
        elif name in GROUP_RESOLVERS:
            resolved[name] = GROUP_RESOLVERS[name](model)
        elif (name in modules or name in params) and name:
            resolved[name] = [name]
        else:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise GroupError(
                f"trainable: {name!r} is neither a group ({', '.join(GROUP_RESOLVERS)}, "
                f"{LAST_BLOCKS}: N) nor a module of {type(model).__name__}{hint}"
            )
    return resolved
