"""Stage presets and the checks of the adapt stage's ``method`` fields.

``preset: official`` on the adapt stage is the authors' fine-tuning as in their release and the
paper's section 5, for the network the recipe names (``official_branch``: decided from
``model.arch``). What every branch shares (shared/reference/fixres-method.md):

- the whole network in eval mode except the adapted modules; BN statistics re-estimated with
  PyTorch's momentum 0.1 inside the modules in train mode;
- SGD, momentum 0.9, weight decay 1e-4 on every trained parameter, biases and norms included
  (``decay_all``; the authors' CNNs list nothing in timm's ``no_weight_decay()``), the lr scaled
  linearly from the authors' batch of 512, divided by 10 every 30 epochs, no warm-up.

The branches (``official_branch`` picks one):

- ``resnet50`` (the paper's ResNet-50, and every network the authors did not fine-tune): the
  classifier trained; the BN before pooling in train mode so its statistics are re-estimated,
  its affine weight and bias frozen (``reestimate: [last_bn]``); lr 0.008, 60 epochs, test DA
  ("the initial learning rate is 0.008 same decay, B = 512, 60 epochs").
- ``resnext_wsl`` (ResNeXt-101 32xNd pre-trained weakly supervised on Instagram, the paper's
  32x48d): as ResNet-50 with "a ten times smaller learning rate" and test DA2, which the paper
  used for every ResNeXt result; 11 epochs, the release's instructions for its test-DA2 models
  (lr argument 1e-4 at batch 256: 0.0004, that is 0.0008 at 512).
- ``pnasnet`` (PNASNet-5-Large): "we modify the last three cells, in one epoch and with a
  learning rate of 0.0008": the classifier and cells 9-11 trained, the cells' BN statistics
  re-estimated; the release also puts the dropout before the classifier back in train mode
  (``reestimate: [head_dropout]``) while every other module stays in eval mode.

Fields the recipe sets itself win over the preset's (``optimizer``/``schedule`` key by key).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fgvc.models.catalog import BY_NAME
from fgvc.models.names import CADENE_PREFIX

AUTHORS_BATCH = 512
CADENE_PNASNET_DROPOUT = 0.5  # Cadene's PNASNet-5-Large, the authors' network, fixes it


@dataclass(frozen=True)
class OfficialBranch:
    """One of the authors' fine-tuning set-ups: what it trains, what it only puts in train
    mode, the lr at batch 512, the epochs and the test-time transform it adapts on."""

    name: str
    networks: str
    trainable: tuple[str, ...]
    train_mode_only: tuple[str, ...]
    lr: float
    epochs: int
    augment: str


RESNET50 = OfficialBranch("resnet50", "as for the paper's ResNet-50, fgvc's choice for every "
                          "network the authors did not fine-tune", ("classifier",),
                          ("last_bn",), 0.008, 60, "test")
RESNEXT_WSL = OfficialBranch("resnext_wsl", "as for the paper's ResNeXt-101 32x48d WSL: ten "
                             "times smaller lr, test DA2", ("classifier",), ("last_bn",), 0.0008,
                             11, "test2")
PNASNET = OfficialBranch("pnasnet", "as for the paper's PNASNet-5-Large: the last three cells "
                         "trained, the head dropout in train mode, one epoch",
                         ("classifier", "last_stage"), ("head_dropout",), 0.0008, 1, "test")

# ResNeXt-101s whose weights are the WSL (Instagram) ones when no tag says otherwise: timm's
# default tag for 32x16d and 32x32d is fb_wsl_ig1b_ft_in1k, and fgvc's 32x48d exists for the WSL
# checkpoint. 32x8d defaults to torchvision's weights; its .fb_wsl_* tag is WSL.
WSL_BY_DEFAULT = ("resnext101_32x16d", "resnext101_32x32d", "resnext101_32x48d")
WSL_TAG = "fb_wsl_"


def official_branch(arch: str) -> OfficialBranch:
    """The authors' set-up for ``model.arch``: PNASNet by the catalogue's family, WSL
    ResNeXts by name or tag, ResNet-50's for everything else."""
    base, _, tag = arch.partition(".")
    entry = BY_NAME.get(base)
    if entry is not None and entry.family == "PNASNet":
        return PNASNET
    if tag.startswith(WSL_TAG) or (base in WSL_BY_DEFAULT and not tag):
        return RESNEXT_WSL
    return RESNET50


def official_adapt(stage: dict[str, Any], arch: str) -> dict[str, Any]:
    """The preset's fields for an adapt stage of an ``arch`` network (plain data)."""
    branch = official_branch(arch)
    batch = stage.get("batch_size", 32)
    scale = batch / AUTHORS_BATCH if isinstance(batch, (int, float)) else 1.0
    return {
        "trainable": list(branch.trainable), "reestimate": list(branch.train_mode_only),
        "bn_momentum": 0.1, "augment": branch.augment, "epochs": branch.epochs,
        "optimizer": {"name": "sgd", "lr": branch.lr * scale, "momentum": 0.9,
                      "weight_decay": 1e-4, "decay_all": True},
        "schedule": {"name": "step", "every": 30, "gamma": 0.1, "warmup_epochs": 0},
    }


def describe_official(arch: str, drop_rate: float) -> list[str]:
    """The branch ``preset: official`` takes for ``arch``, and what would make it differ from
    the authors' run, for ``fgvc validate`` and the run's log."""
    branch = official_branch(arch)
    out = [f"preset official, branch {branch.name} (from model.arch {arch}): {branch.networks}"]
    if branch is PNASNET and not arch.startswith(CADENE_PREFIX) and not drop_rate:
        out.append(f"model.drop_rate is 0, so the head dropout this branch keeps in train mode "
                   f"drops nothing; the authors' (Cadene's) PNASNet drops "
                   f"{CADENE_PNASNET_DROPOUT:g}: set model.drop_rate: {CADENE_PNASNET_DROPOUT:g} "
                   "to match")
    return out


PRESETS = {"official": official_adapt}
NONE_MEANS_DEFAULT = ("trainable", "augment")  # null there asks for the default: the preset's


def _arch(data: dict) -> str:
    """``model.arch`` of plain recipe data ("" when absent: the schema reports that)."""
    model = data.get("model")
    arch = model.get("arch") if isinstance(model, dict) else None
    return arch if isinstance(arch, str) else ""


def apply_presets(data: Any) -> Any:
    """Fill each stage's preset values under the fields the recipe gives (plain data in/out)."""
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not any(
            isinstance(s, dict) and s.get("preset") in PRESETS for s in stages):
        return data
    data = copy.deepcopy(data)
    for i, stage in enumerate(stages):
        if isinstance(stage, dict) and stage.get("preset") in PRESETS:
            merged = PRESETS[stage["preset"]](stage, _arch(data))
            for key, value in stage.items():
                if value is None and key in NONE_MEANS_DEFAULT:
                    continue
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
            data["stages"][i] = merged
    return data


def check_adapt_method(stage) -> list[tuple[str, str]]:
    """Problems with ``method``/``data_split``/``reestimate``/``reference_resolution``/
    ``preset`` of a ``StageConfig``, as (field, message) pairs."""
    out = []
    if stage.name != "adapt":
        for key, default in (("method", "finetune"), ("preset", None), ("data_split", None),
                             ("reference_resolution", None)):
            if getattr(stage, key) != default:
                out.append((key, f"only an adapt stage takes {key}, got {getattr(stage, key)!r}"))
        if stage.reestimate:
            out.append(("reestimate", "only an adapt stage re-estimates BN statistics"))
    if stage.reference_resolution is not None and stage.reference_resolution <= 0:
        out.append(("reference_resolution", f"must be a positive number of pixels, got "
                    f"{stage.reference_resolution!r}"))
    if stage.data_split is not None and not stage.data_split:
        out.append(("data_split", "must name a split, e.g. train or test"))
    if stage.preset is not None and stage.method != "finetune":
        out.append(("preset", f"preset {stage.preset!r} fine-tunes: it needs method finetune, "
                    f"got {stage.method!r}"))
    return out


REFERENCE_METHODS = ("frechet", "gaussian")  # they match K_test's activations to K_train's


def check_frechet_reference(recipe) -> list[tuple[str, str]]:
    """``method: frechet`` and ``method: gaussian`` measure the activations at K_train: they
    need a train stage or ``reference_resolution``."""
    out = []
    for i, stage in enumerate(recipe.stages):
        if (stage is not None and stage.method in REFERENCE_METHODS
                and stage.reference_resolution is None and recipe.stage("train") is None):
            out.append((f"stages[{i}].reference_resolution", f"method {stage.method} needs "
                        "K_train: set it (the resolution the weights were trained at) or add a "
                        "train stage"))
    return out
