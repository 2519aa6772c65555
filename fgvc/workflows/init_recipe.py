"""``fgvc init``: a commented recipe for a dataset on disk, that validates as written.

What is chosen, and from what:
- splits, from the dataset as its adapter reads it: the official ``val`` split where there is
  one, else ``val_split: holdout`` (a stratified ``holdout`` fraction of the training split);
  the labelled ``test`` split is evaluated where there is one; an unlabelled split gets a
  prediction and submission section.
- resolutions: train at the architecture's own size (its pretrained weights' size), adapt at
  the test resolution the paper's arithmetic matches to it (``fgvc resolution``), on the
  network's grid (its output stride: 32 px for CNNs, the patch for ViTs).
- batch size: from the parameter count and the resolution, capped by the training images.
- weights: ``pretrained: imagenet`` only when the weights are already in this machine's cache
  (no download is tried); otherwise ``pretrained: none`` and comments saying where to get them.

The dataset is read without torch; the architecture is checked with timm (which loads torch):
any timm name is accepted, built on the meta device, so no memory and no download.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fgvc.datasets.base import HOLDOUT_SPLIT, DatasetError, DatasetIndex, with_holdout
from fgvc.errors import UsageError
from fgvc.io.atomic import atomic_write

DEFAULT_ARCH = "resnet50"
DEFAULT_HOLDOUT = 0.1
LARGE_TRAIN = 100_000  # above this many training images a 2 % holdout is plenty
SEED = 0


@dataclass
class DataChoice:
    """What the recipe's dataset section and evaluation say, and why (``notes``)."""

    train_split: str
    val_split: str
    holdout: float
    evaluate_split: str
    predict_split: str | None
    num_classes: int
    sizes: dict[str, int]
    train_images: int  # after the holdout is taken out


@dataclass
class ModelChoice:
    """The architecture's facts the recipe is built from."""

    arch: str
    params: int
    native: int
    crop_pct: float
    grid: int
    adapt_groups: list[str]
    uses_batchnorm: bool
    pretrained: str  # "imagenet" or "none"
    weights_comment: list[str] = field(default_factory=list)


@dataclass
class InitResult:
    path: Path
    name: str
    summary: str
    next_commands: list[str]


def _labelled(index: DatasetIndex) -> list[str]:
    return [s for s in index.splits if index.is_labelled(s)]


def choose_splits(index: DatasetIndex) -> DataChoice:
    """Train on ``train`` (else ``trainval``), validate on ``val`` when the dataset has one,
    else on a holdout of the training split; evaluate the labelled ``test`` split when there is
    one; predict the unlabelled split when there is one."""
    labelled = _labelled(index)
    if not labelled:
        raise DatasetError(f"dataset {index.name!r} at {index.root}: no split has labels "
                           f"(splits: {', '.join(index.splits) or 'none'}); training needs one")
    train = next((s for s in ("train", "trainval") if s in labelled), labelled[0])
    if "val" in labelled and train != "trainval":
        val, holdout = "val", 0.0
    else:
        val = HOLDOUT_SPLIT
        holdout = DEFAULT_HOLDOUT if len(index.splits[train]) <= LARGE_TRAIN else 0.02
    evaluate = "test" if "test" in labelled and train != "test" else val
    unlabelled = [s for s in index.splits if s not in labelled]
    predict = "test" if "test" in unlabelled else (unlabelled[0] if unlabelled else None)
    carved = with_holdout(index, train, holdout, SEED) if holdout else index
    return DataChoice(train, val, holdout, evaluate, predict, index.num_classes,
                      {k: len(v) for k, v in index.splits.items()}, len(carved.splits[train]))


def read_dataset(name: str, root: Path, options: dict[str, Any]) -> DatasetIndex:
    """The dataset as ``fgvc run`` will read it; a missing root is one clear line."""
    from fgvc.datasets import load_dataset, registry

    registry.get(name)  # an unknown name: "did you mean", before looking at the disk
    if not root.exists():
        raise DatasetError(f"--root {root}: no such folder (`fgvc datasets card {name}` says "
                           "where to get the dataset and which folder to give)")
    if name == "synthetic" and not (root / "meta.json").is_file():
        raise DatasetError(f"--root {root}: holds no generated synthetic dataset; "
                           "`fgvc run recipes/quickstart.yaml` generates one")
    return load_dataset(name, root, options)


def _check_arch(arch: str) -> None:
    from fgvc.recipes.recipe import ModelConfig

    problems = ModelConfig(arch=arch).check()
    if problems:
        raise UsageError("--arch: " + "; ".join(message for _, message in problems))


def _weights_source(arch: str) -> tuple[str, str] | None:
    """Where ``pretrained: imagenet`` would fetch the weights from: ("hf-hub", repo) or
    ("url", address); None when timm knows no weights for the name."""
    from fgvc.models.names import CADENE_PREFIX, HF_PREFIX

    if arch.startswith(HF_PREFIX):
        return "hf-hub", arch[len(HF_PREFIX):]
    if arch.startswith(CADENE_PREFIX):
        import pretrainedmodels

        url = pretrainedmodels.pretrained_settings[arch[len(CADENE_PREFIX):]].get(
            "imagenet", {}).get("url")
        return ("url", url) if url else None
    from timm.models import get_pretrained_cfg
    from timm.models._builder import _resolve_pretrained_source

    try:
        cfg = get_pretrained_cfg(arch)
    except RuntimeError:
        return None
    if cfg is None:
        return None
    kind, location = _resolve_pretrained_source(cfg.to_dict())
    if kind == "hf-hub":
        return kind, location[0] if isinstance(location, tuple) else location
    return (kind, location) if kind == "url" else None


def cached_weights(source: tuple[str, str] | None) -> str | None:
    """The local file ``pretrained: imagenet`` would load without a download, or None."""
    if source is None:
        return None
    kind, location = source
    if kind == "hf-hub":
        from huggingface_hub import try_to_load_from_cache

        from fgvc.models.factory import _hf_cache  # HF_HUB_CACHE / HF_HOME, read now

        repo = location.split("@")[0]
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename, cache_dir=_hf_cache())
            if isinstance(found, str):
                return found
        return None
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(location.split("?")[0])
    return str(path) if path.is_file() else None


def _weights_comment(arch: str, source: tuple[str, str] | None) -> list[str]:
    """Why ``pretrained: none``, and the two ways to start from pretrained weights."""
    if source is None:
        return [f"timm knows no pretrained weights for {arch}: it starts from random weights.",
                "To start from a checkpoint of your own: model.weights: path/to/file (.pth, .pt",
                "or .safetensors)."]
    kind, location = source
    where = f"hf-hub:{location}" if kind == "hf-hub" else location
    return [f"The pretrained weights of {arch} are not in this machine's cache, so this recipe",
            "starts from random weights (pretrained: none): fine-grained accuracy needs them.",
            f"- online: set pretrained: imagenet (fetched once from {where});",
            "- offline: download that checkpoint elsewhere, copy it here and set",
            "  model.weights: path/to/checkpoint (.safetensors, .pth or .pt), pretrained: none."]


def inspect_arch(arch: str, num_classes: int) -> ModelChoice:
    """Build ``arch`` on the meta device (no memory, no download) and read what the recipe
    needs: parameters, native size, crop ratio, grid, adaptation groups, cached weights."""
    _check_arch(arch)
    import torch.nn as nn

    from fgvc.models.factory import data_config
    from fgvc.models.groups import GroupError, resolve_groups
    from fgvc.models.resolution import meta_model, native_size
    from fgvc.recipes.plan import output_stride
    from fgvc.recipes.recipe import ModelConfig

    cfg = ModelConfig(arch=arch)
    model = meta_model(cfg, num_classes)
    try:
        norms = resolve_groups(model, ["last_bn"])["last_bn"]
    except GroupError:  # no normalisation before pooling: stage 2 adapts the classifier alone
        norms = None
    modules = dict(model.named_modules())
    batchnorm = any(isinstance(modules.get(p), nn.modules.batchnorm._BatchNorm) for p in norms)
    groups = ["classifier"] + ([] if norms is None else ["last_bn" if batchnorm else "last_norm"])
    try:
        if not batchnorm and resolve_groups(model, ["pos_embed"])["pos_embed"]:
            groups.append("pos_embed")  # a ViT's position embedding, re-learned at K_test
    except GroupError:
        pass
    source = _weights_source(arch)
    found = cached_weights(source)
    comment = ([f"ImageNet weights found in this machine's cache: {found}"] if found
               else _weights_comment(arch, source))
    return ModelChoice(arch, sum(p.numel() for p in model.parameters()), native_size(model),
                       data_config(model, cfg).crop_pct, output_stride(model), groups,
                       batchnorm, "imagenet" if found else "none", comment)


def choose_resolutions(native: int, crop_pct: float, grid: int, train: int | None = None
                       ) -> tuple[int, int]:
    """K_train (the network's own size unless given) and the K_test that matches it on the
    network's grid, at least one grid step above K_train."""
    from fgvc.analysis.resolution import matching_test_resolution

    k_train = train or native
    k_test = matching_test_resolution(k_train, crop_pct, (0.08, 1.0), grid)
    return k_train, max(k_test, k_train + grid)


def _power_of_two_at_most(n: float) -> int:
    return 2 ** int(math.floor(math.log2(max(n, 1))))


def choose_batch_size(params: int, resolution: int, train_images: int) -> int:
    """64 images of 224 px for a ResNet-50-sized network, fewer for larger networks and
    images (memory grows with pixels), a power of two no larger than the training split."""
    base = 64 if params <= 30e6 else 32 if params <= 100e6 else 16
    size = max(8, _power_of_two_at_most(base * (224 / resolution) ** 2))
    return max(1, min(size, _power_of_two_at_most(train_images)))


def recipe_name(dataset: str, arch: str) -> str:
    """``<dataset>_<arch>`` in the characters a run folder name allows."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}_{arch}").strip("_.-") or dataset


def _scalar(value: Any) -> str:
    """A value as YAML that reads back as itself (strings quoted only where they must be)."""
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z0-9_./-]+", value) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value)
    return json.dumps(value)


def _number(value: float) -> str:
    """Three significant digits as a YAML float (PyYAML reads ``1e-05`` as text: ``1.0e-05``)."""
    text = f"{value:.3g}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text


def _comment(lines: list[str], indent: str = "") -> str:
    return "".join(f"{indent}# {line}\n" for line in lines)


def render(dataset: str, root: str, options: dict[str, Any], data: DataChoice,
           model: ModelChoice, k_train: int, k_test: int) -> str:
    """The recipe text, every choice commented."""
    from fgvc.inference.submission import FORMATS

    name = recipe_name(dataset, model.arch)
    batch = choose_batch_size(model.params, k_train, data.train_images)
    adapt_batch = max(1, min(batch, _power_of_two_at_most(batch * (k_train / k_test) ** 2)))
    sgd = model.uses_batchnorm
    lr = 0.01 * batch / 64 if sgd else 1e-4 * batch / 32
    sizes = ", ".join(f"{k} {v:,}" for k, v in data.sizes.items())
    text = _comment([f"{dataset} with {model.arch}, written by `fgvc init` from what is on disk:",
                     f"{data.num_classes} classes; splits {sizes}.",
                     "Check it with `fgvc validate FILE`; every choice below says why."])
    text += f"name: {_scalar(name)}\nseed: {SEED}\ndataset:\n"
    text += f"  name: {_scalar(dataset)}\n  root: {_scalar(root)}\n"
    if options:
        text += f"  options: {json.dumps(options)}\n"
    text += f"  train_split: {_scalar(data.train_split)}\n"
    if data.holdout:
        text += _comment([f"No official validation split: {data.holdout:g} of {data.train_split} "
                          "(stratified, seeded) is held out",
                          "to validate on; the rest trains."], "  ")
        text += f"  val_split: {HOLDOUT_SPLIT}\n  holdout: {data.holdout:g}\n"
    else:
        text += f"  val_split: {_scalar(data.val_split)}\n"
    workers = min(8, os.cpu_count() or 1)
    text += f"  num_workers: {workers}  # loader processes: this machine's cores, at most 8\n"
    text += "model:\n"
    text += f"  arch: {_scalar(model.arch)}\n"
    text += _comment(model.weights_comment, "  ")
    text += f"  pretrained: {model.pretrained}\n"
    text += _comment([
        f"Train at {k_train} px (the network's own size), adapt at {k_test} px: the size at "
        "which objects look",
        f"as large as in training (`fgvc resolution --train {k_train} --crop-pct "
        f"{model.crop_pct:g} --multiple {model.grid}`;",
        f"{model.grid} px is the network's output stride). Fine-grained results in the paper "
        "train at 448:",
        "more accurate, about 4x the compute: `fgvc init ... --resolution 448`.",
        f"batch_size: {batch} is a starting point; halve it (and the lr) if memory runs out."])
    opt = (f"{{name: sgd, lr: {_number(lr)}, momentum: 0.9, weight_decay: 1.0e-4}}" if sgd
           else f"{{name: adamw, lr: {_number(lr)}, weight_decay: 0.05}}")
    adapt_opt = (f"{{name: sgd, lr: {_number(lr / 10)}, momentum: 0.9, weight_decay: 1.0e-4}}"
                 if sgd else f"{{name: adamw, lr: {_number(lr / 5)}, weight_decay: 0.0}}")
    text += "stages:\n"
    text += (f"  - name: train\n    resolution: {k_train}\n    epochs: 30\n"
             f"    batch_size: {batch}\n    optimizer: {opt}\n"
             "    schedule: {name: cosine, warmup_epochs: 1}\n    label_smoothing: 0.1\n")
    what = ("the classifier and the last BN (statistics re-estimated at the new size)"
            if sgd else "the classifier and the last norm" +
            (" and the position embedding" if "pos_embed" in model.adapt_groups else ""))
    text += _comment([f"FixRes stage 2: {what},", "fine-tuned at the test resolution with test DA."],
                     "  ")
    text += (f"  - name: adapt\n    resolution: {k_test}\n    epochs: 2\n"
             f"    batch_size: {adapt_batch}\n    trainable: [{', '.join(model.adapt_groups)}]\n"
             f"    augment: test\n    optimizer: {adapt_opt}\n    schedule: {{name: constant}}\n")
    if data.evaluate_split != data.val_split:
        text += _comment([f"The labelled {data.evaluate_split} split is only evaluated (at both "
                          "resolutions, before and after",
                          "adaptation); training and validation never see it."])
    text += (f"evaluate: {{split: {_scalar(data.evaluate_split)}, resolutions: [{k_train}, "
             f"{k_test}], batch_size: {adapt_batch * 2}}}\n")
    if data.predict_split is None:
        text += _comment(["No unlabelled split to predict for a submission; to predict your own "
                          "images:", f"`fgvc predict runs/{name} --images DIR`."])
        text += "predict: null\nsubmission: null\n"
    else:
        fmt = dataset if dataset in FORMATS else "generic"
        text += _comment([f"The unlabelled {data.predict_split} split is predicted at {k_test} px "
                          f"and written as a {fmt} submission",
                          f"(submissions/{name}.csv; `fgvc submit` sends it to Kaggle)."])
        text += (f"predict: {{split: {_scalar(data.predict_split)}}}\n"
                 f"submission: {{format: {fmt}}}\n")
    return text


def init_recipe(dataset: str, root: str, out: str | None = None, arch: str = DEFAULT_ARCH,
                force: bool = False, options: dict[str, Any] | None = None,
                resolution: int | None = None) -> InitResult:
    """Read the dataset, choose the recipe's settings, write it (refusing to overwrite unless
    ``force``) after checking that it parses and that the dataset has every split it names."""
    from fgvc.recipes.recipe import parse_recipe
    from fgvc.recipes.schema import read_yaml
    from fgvc.recipes.splits import split_problems

    options = dict(options or {})
    path = Path(out or f"{dataset}.yaml")
    if path.exists() and not force:
        raise UsageError(f"--out {path}: already exists (--force overwrites it)")
    if resolution is not None and resolution <= 0:
        raise UsageError(f"--resolution: must be a positive number of pixels, got {resolution}")
    index = read_dataset(dataset, Path(root), options)
    data = choose_splits(index)
    model = inspect_arch(arch, index.num_classes)
    k_train, k_test = choose_resolutions(model.native, model.crop_pct, model.grid, resolution)
    text = render(dataset, root, options, data, model, k_train, k_test)
    recipe = parse_recipe(read_yaml(text, str(path)), str(path))
    seen = with_holdout(index, data.train_split, data.holdout, SEED) if data.holdout else index
    problems = split_problems(recipe, seen)
    if problems:  # a choice above disagrees with the data: say so rather than write it
        raise ValueError(f"fgvc init chose splits the dataset lacks: {'; '.join(problems)}")
    atomic_write(path, text)  # its folder made; a failed write is one line naming the file
    run_dir = Path(recipe.output_root) / recipe.name
    summary = (f"{path}: {dataset} at {root}, {data.num_classes} classes, train "
               f"{data.train_split!r}, validate on {data.val_split!r}"
               f"{f' ({data.holdout:g} of {data.train_split})' if data.holdout else ''}, evaluate "
               f"{data.evaluate_split!r}; {model.arch} {k_train} -> {k_test} px, batch "
               f"{recipe.stages[0].batch_size}, pretrained: {model.pretrained}"
               + ("" if model.pretrained != "none" else
                  " (no cached ImageNet weights: the recipe's model section says how to add them)"))
    commands = [f"fgvc validate {path}", f"fgvc run {path}",
                f"fgvc predict {run_dir} --images DIR"]
    return InitResult(path, recipe.name, summary, commands)
