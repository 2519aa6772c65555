"""The architectures fgvc documents, as a static table: ``fgvc models list`` reads it without
importing torch or timm, and recipe checking accepts its names without building anything.

The numbers (parameters with a 1000-class head, default resolution, normalisation,
interpolation) are what the factory builds; ``tests/test_models_list.py`` checks them against
real construction. ``describe`` (``fgvc models show``) builds any timm name on the meta device
for the rest: the adaptation groups it resolves and its data settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


@dataclass(frozen=True)
class Entry:
    """One architecture: ``group`` is ``paper`` (the paper's networks and their peers),
    ``modern`` (one or two per recent family) or ``cpu`` (small, for CPU runs)."""

    name: str
    family: str
    params: int
    resolution: int
    norm: str
    interpolation: str
    group: str
    note: str = ""

    @property
    def mean(self) -> tuple[float, ...]:
        return NORMS[self.norm][0]

    @property
    def std(self) -> tuple[float, ...]:
        return NORMS[self.norm][1]

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "params": self.params,
                "default_resolution": self.resolution, "normalisation": self.norm,
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "note": self.note}


def _e(name: str, family: str, params: int, resolution: int, norm: str, interpolation: str,
       group: str, note: str = "") -> Entry:
    return Entry(name, family, params, resolution, norm, interpolation, group, note)


_CADENE = "pretrainedmodels:"
ENTRIES: tuple[Entry, ...] = (
    _e("resnet50", "ResNet", 25_557_032, 224, "imagenet", "bicubic", "paper",
       "the paper's ImageNet tables; recipes imagenet_resnet50_*, herbarium2019_resnet50"),
    _e("resnet101", "ResNet", 44_549_160, 224, "imagenet", "bicubic", "paper"),
    _e("resnet152", "ResNet", 60_192_808, 224, "imagenet", "bicubic", "paper"),
    _e("legacy_seresnext101_32x4d", "SE-ResNeXt", 48_955_416, 224, "imagenet", "bilinear",
       "paper", "recipe inat2019_seresnext101"),
    _e("legacy_senet154", "SENet", 115_088_984, 224, "imagenet", "bilinear", "paper",
       "recipes inat2019_senet154, herbarium2019_senet154"),
    _e("inception_resnet_v2", "Inception-ResNet-v2", 55_843_464, 299, "inception", "bicubic",
       "paper", "recipe inat2019_inceptionresnetv2"),
    _e("pnasnet5large", "PNASNet", 86_057_668, 331, "inception", "bicubic", "paper",
       "the paper's FixPNASNet-5"),
    _e("resnext101_32x8d", "ResNeXt", 88_791_336, 224, "imagenet", "bilinear", "paper"),
    _e("resnext101_32x16d", "ResNeXt", 194_026_792, 224, "imagenet", "bilinear", "paper"),
    _e("resnext101_32x32d", "ResNeXt", 468_530_472, 224, "imagenet", "bilinear", "paper"),
    _e("resnext101_32x48d", "ResNeXt", 828_411_176, 224, "imagenet", "bilinear", "paper",
       "the paper's best ImageNet result; WSL weights by hand (model.weights)"),
    _e("efficientnet_b0", "EfficientNet", 5_288_548, 224, "imagenet", "bicubic", "paper",
       "FixEfficientNet's family (b0-b7 here)"),
    _e("efficientnet_b1", "EfficientNet", 7_794_184, 240, "inception", "bicubic", "paper"),
    _e("efficientnet_b2", "EfficientNet", 9_109_994, 256, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b3", "EfficientNet", 12_233_232, 288, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b4", "EfficientNet", 19_341_616, 320, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b5", "EfficientNet", 30_389_784, 448, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b6", "EfficientNet", 43_040_704, 528, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b7", "EfficientNet", 66_347_960, 600, "imagenet", "bicubic", "paper"),
    _e("mpncov_resnet50", "MPN-COV ResNet", 56_929_832, 448, "imagenet", "bilinear", "paper",
       "fgvc's: covariance pooling (iSQRT-COV) after layer4"),
    _e("mpncov_resnet101", "MPN-COV ResNet", 75_921_960, 448, "imagenet", "bilinear", "paper"),
    _e("mpncov_resnet152", "MPN-COV ResNet", 91_565_608, 448, "imagenet", "bilinear", "paper",
       "recipe inat2019_mpncov"),
    _e(_CADENE + "senet154", "SENet", 115_088_984, 224, "imagenet", "bilinear", "paper",
       "Cadene's original of legacy_senet154 (pip install pretrainedmodels)"),
    _e(_CADENE + "se_resnext101_32x4d", "SE-ResNeXt", 48_955_416, 224, "imagenet", "bilinear",
       "paper", "Cadene's original of legacy_seresnext101_32x4d"),
    _e(_CADENE + "inceptionresnetv2", "Inception-ResNet-v2", 55_843_464, 299, "inception",
       "bilinear", "paper", "Cadene's original of inception_resnet_v2"),
    _e(_CADENE + "pnasnet5large", "PNASNet", 86_057_668, 331, "inception", "bilinear", "paper",
       "Cadene's original of pnasnet5large"),
    _e(_CADENE + "resnet50", "ResNet", 25_557_032, 224, "imagenet", "bilinear", "paper",
       "Cadene's (torchvision's) resnet50"),
    _e("vit_base_patch16_224", "ViT", 86_567_656, 224, "inception", "bicubic", "modern",
       "ViT-B/16; position embedding resampled at any size"),
    _e("deit_base_patch16_224", "DeiT", 86_567_656, 224, "imagenet", "bicubic", "modern"),
    _e("vit_base_patch14_dinov2", "DINOv2", 87_348_712, 518, "imagenet", "bicubic", "modern",
       "self-supervised ViT-B/14; sizes must be multiples of 14"),
    _e("eva02_base_patch14_448", "EVA-02", 87_117_544, 448, "clip", "bicubic", "modern",
       "recipe cub200_eva02 (tag mim_in22k_ft_in22k_in1k)"),
    _e("swin_base_patch4_window12_384", "Swin", 87_903_584, 384, "imagenet", "bicubic", "modern",
       "recipe cub200_swin (tag ms_in22k_ft_in1k)"),
    _e("convnext_base", "ConvNeXt", 88_591_464, 224, "imagenet", "bicubic", "modern",
       "recipe cub200_convnext (tag fb_in22k_ft_in1k_384)"),
    _e("regnety_160", "RegNetY", 83_590_140, 224, "imagenet", "bicubic", "modern"),
    _e("resnet18", "ResNet", 11_689_512, 224, "imagenet", "bicubic", "cpu",
       "the quickstart's (`fgvc recipes show quickstart`)"),
    _e("vit_fgvc_tiny_patch8", "ViT", 681_736, 64, "imagenet", "bilinear", "cpu",
       "fgvc's CPU-sized ViT: 6 blocks, width 96, 8 px patches"),
    _e("vit_fgvc_tiny_convstem", "ViT", 725_344, 64, "imagenet", "bilinear", "cpu",
       "the tiny ViT with a 3-convolution stem; recipe quickstart_vit"),
)
BY_NAME: dict[str, Entry] = {e.name: e for e in ENTRIES}

# The paper's networks and their usual peers; modern backbones, one or two per family.
SUPPORTED = [e.name for e in ENTRIES if e.group == "paper"]
MODERN = [e.name for e in ENTRIES if e.group == "modern"]


def is_listed(name: str) -> bool:
    """True for a catalogue name that needs no optional package (every name but Cadene's):
    such a ``model.arch`` is known without importing timm."""
    return name in BY_NAME and not name.startswith(_CADENE)


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


def check_names(names: list[str]) -> None:
    """Refuse, in one line, a name ``model.arch`` would refuse (with "did you mean")."""
    unlisted = [n for n in names if not is_listed(n)]
    if not unlisted:
        return
    from fgvc.models.factory import arch_problem, known_arch_names
    from fgvc.suggest import did_you_mean

    for name in unlisted:
        problem = arch_problem(name)
        if problem is not None:
            if problem.startswith("unknown model"):
                problem += did_you_mean(name, known_arch_names())
            raise ValueError(f"{problem} (a timm name such as 'resnet50', 'arch.tag', "
                             "'hf-hub:org/repo', or 'pretrainedmodels:<name>'; see "
                             "`fgvc models list`)")


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

    from fgvc.models.factory import create_model, data_config
    from fgvc.models.groups import GROUP_RESOLVERS, GroupError, last_blocks_paths
    from fgvc.recipes.recipe import ModelConfig

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
