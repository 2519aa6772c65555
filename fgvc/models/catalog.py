"""``fgvc models list``: each supported architecture with its size, data settings and the
adaptation groups that resolve on it; built on the meta device, so it costs no memory."""

from __future__ import annotations

import torch

from fgvc.models.groups import GROUP_RESOLVERS, GroupError, last_blocks_paths
from fgvc.models.zoo import MODERN, SUPPORTED
from fgvc.recipes.recipe import ModelConfig


def describe(arch: str, num_classes: int = 1000) -> dict:
    from fgvc.models.factory import create_model, data_config

    cfg = ModelConfig(arch=arch)
    with torch.device("meta"):
        model = create_model(cfg, num_classes)
    data = data_config(model, cfg)
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    groups = {}
    for name, resolve in [*GROUP_RESOLVERS.items(),
                          ("last_blocks: 1", lambda m: last_blocks_paths(m, 1))]:
        try:
            groups[name] = resolve(model)
        except GroupError as err:
            groups[name] = f"unresolved: {err}"
    return {
        "name": arch,
        "params": sum(p.numel() for p in model.parameters()),
        "default_resolution": int(pretrained.get("input_size", (3, 224, 224))[-1]),
        "mean": list(data.mean),
        "std": list(data.std),
        "interpolation": data.interpolation,
        "groups": groups,
    }


def catalog(archs: list[str] | None = None) -> list[dict]:
    return [describe(a) for a in (archs or SUPPORTED + MODERN)]
