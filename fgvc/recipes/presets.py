"""Stage presets and the checks of the adapt stage's ``method`` fields.

``preset: official`` on the adapt stage is the authors' fine-tuning as in their release and the
paper's section 5 ("To finetune, the initial learning rate is 0.008 same decay, B = 512, 60
epochs"; "the learning rate is divided by 10 every 30 epochs"; SGD momentum 0.9, weight decay
1e-4, see shared/reference/fixres-method.md):

- trains only the classifier; the BN before pooling stays in train mode so its running
  statistics are re-estimated (PyTorch momentum 0.1) while its affine weight and bias stay
  frozen (``reestimate: [last_bn]``);
- weight decay 1e-4 on every trained parameter, biases included (``decay_all``);
- SGD, momentum 0.9, lr 0.008 x batch_size / 512, step decay /10 every 30 epochs, no warm-up,
  60 epochs; test DA.

Fields the recipe sets itself win over the preset's (``optimizer``/``schedule`` key by key).
"""

from __future__ import annotations

import copy
from typing import Any

AUTHORS_LR, AUTHORS_BATCH = 0.008, 512


def official_adapt(stage: dict[str, Any]) -> dict[str, Any]:
    batch = stage.get("batch_size", 32)
    lr = AUTHORS_LR * batch / AUTHORS_BATCH if isinstance(batch, (int, float)) else AUTHORS_LR
    return {
        "trainable": ["classifier"], "reestimate": ["last_bn"], "bn_momentum": 0.1,
        "augment": "test", "epochs": 60,
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 1e-4,
                      "decay_all": True},
        "schedule": {"name": "step", "every": 30, "gamma": 0.1, "warmup_epochs": 0},
    }


PRESETS = {"official": official_adapt}
NONE_MEANS_DEFAULT = ("trainable", "augment")  # null there asks for the default: the preset's


def apply_presets(data: Any) -> Any:
    """Fill each stage's preset values under the fields the recipe gives (plain data in/out)."""
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not any(
            isinstance(s, dict) and s.get("preset") in PRESETS for s in stages):
        return data
    data = copy.deepcopy(data)
    for i, stage in enumerate(stages):
        if isinstance(stage, dict) and stage.get("preset") in PRESETS:
            merged = PRESETS[stage["preset"]](stage)
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


def check_frechet_reference(recipe) -> list[tuple[str, str]]:
    """``method: frechet`` measures the activations at K_train: it needs a train stage or
    ``reference_resolution``."""
    out = []
    for i, stage in enumerate(recipe.stages):
        if (stage is not None and stage.method == "frechet" and stage.reference_resolution is None
                and recipe.stage("train") is None):
            out.append((f"stages[{i}].reference_resolution", "method frechet needs K_train: set "
                        "it (the resolution the weights were trained at) or add a train stage"))
    return out
