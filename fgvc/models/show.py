"""``fgvc models list`` and ``fgvc models show``: the catalogue's rows (fgvc/models/catalog.py,
read without importing torch or timm), and any other name built on the meta device (no memory,
no weights) for the rest: its size, the adaptation groups it resolves and its data settings.
"""

from __future__ import annotations

from typing import Any

from fgvc.models.catalog import BY_NAME, ENTRIES
from fgvc.models.names import check_names
from fgvc.norms import NORMS


def listing(names: list[str] | None = None) -> list[dict[str, Any]]:
    """One record per architecture: the catalogue's without ``names``; otherwise each name's,
    from the catalogue where it is listed and built on the meta device where not."""
    if not names:
        return [e.record() for e in ENTRIES]
    check_names([n for n in names if n not in BY_NAME])
    light = ("name", "family", "params", "default_resolution", "normalisation", "mean", "std",
             "interpolation", "note")
    return [BY_NAME[n].record() if n in BY_NAME else {k: describe(n)[k] for k in light}
            for n in names]


def format_listing(rows: list[dict[str, Any]]) -> str:
    """The table ``fgvc models list`` prints: one line per architecture."""
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'ARCH':<{width}}  {'FAMILY':<20} {'PARAMS':>7}  {'SIZE':>5}  {'NORM':<9} "
             f"{'INTERP':<8}  NOTE"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['family']:<20} {r['params'] / 1e6:>6.1f}M  "
                     f"{r['default_resolution']:>3}px  {r['normalisation']:<9} "
                     f"{r['interpolation']:<8}  {r['note']}".rstrip())
    lines.append("Any timm name works too (`arch.tag` for a pretrained tag, hf-hub:org/repo). "
                 "`fgvc models show ARCH` resolves its adaptation groups and data settings.")
    return "\n".join(lines) + "\n"


def _norm_name(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    for name, (m, s) in NORMS.items():
        if all(abs(a - b) < 1e-4 for a, b in zip((*mean, *std), (*m, *s), strict=True)):
            return name
    return "custom"


def describe(arch: str, num_classes: int = 1000) -> dict[str, Any]:
    """Everything about ``arch`` (any name ``model.arch`` takes), from the network built on the
    meta device (no memory, no weights): size, data settings and the modules of every
    adaptation group."""
    import torch

    from fgvc.models.config import ModelConfig
    from fgvc.models.factory import create_model, data_config
    from fgvc.models.groups import GROUP_RESOLVERS, GroupError, last_blocks_paths

    check_names([arch])
    cfg = ModelConfig(arch=arch)
    with torch.device("meta"):
        model = create_model(cfg, num_classes)
    data = data_config(model, cfg)
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    groups: dict[str, list[str] | str] = {}
    for name, resolve in [*GROUP_RESOLVERS.items(),
                          ("last_blocks: 1", lambda m: last_blocks_paths(m, 1))]:
        try:
            groups[name] = resolve(model)
        except GroupError as err:
            groups[name] = f"unresolved: {err}"
    entry = BY_NAME.get(arch)
    return {
        "name": arch,
        "family": entry.family if entry else type(model).__name__,
        "class": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "num_classes": num_classes,
        "default_resolution": int(pretrained.get("input_size", (3, 224, 224))[-1]),
        "normalisation": _norm_name(data.mean, data.std),
        "mean": list(data.mean),
        "std": list(data.std),
        "interpolation": data.interpolation,
        "crop_pct": data.crop_pct,
        "input_range": data.input_range,
        "input_space": data.input_space,
        "groups": groups,
        "note": entry.note if entry else "",
    }


def format_details(row: dict[str, Any]) -> str:
    """The text ``fgvc models show`` prints for one architecture."""
    mean = "/".join(f"{m:.3f}" for m in row["mean"])
    std = "/".join(f"{s:.3f}" for s in row["std"])
    lines = [f"{row['name']}  ({row['family']}; class {row['class']})"]
    if row["note"]:
        lines.append(f"  note            {row['note']}")
    lines += [
        f"  parameters      {row['params']:,} (with a {row['num_classes']}-class head)",
        f"  resolution      {row['default_resolution']} px (its pretrained configuration)",
        f"  normalisation   {row['normalisation']}: mean {mean}  std {std}  (inputs 0-"
        f"{row['input_range']:g}, {row['input_space']})",
        f"  interpolation   {row['interpolation']}, crop {row['crop_pct']:.3f}",
        "  adaptation groups (a stage's `trainable`):",
    ]
    groups = dict(row["groups"])
    if groups.get("last_bn") == groups.get("last_norm"):
        groups = {("last_bn / last_norm" if k == "last_bn" else k): v for k, v in groups.items()
                  if k != "last_norm"}
    for name, paths in groups.items():
        shown = ", ".join(paths) if isinstance(paths, list) else paths
        lines.append(f"    {name:<19} {shown}")
    return "\n".join(lines) + "\n"
