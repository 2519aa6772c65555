"""What a stage trains and which batch-norm statistics it re-estimates.

``train``: everything trainable, the whole network in train mode.
``adapt`` (FixRes stage 2): the whole network in eval mode, so every BN keeps its running
statistics and dropout is off, except the adapted modules, which are put back into train mode:
their parameters are trained and the running statistics of the BNs inside them are re-estimated
at the test resolution. ``reestimate`` modules are put in train mode without being trained: a
BN's statistics are re-estimated, a dropout drops (the authors' PNASNet fine-tuning keeps the
dropout before its classifier active). Every other tensor stays bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from fgvc.models.groups import resolve_groups

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class TrainablePlan:
    """``everything`` for a train stage; otherwise the module paths of each adapted group."""

    everything: bool
    groups: dict[str, list[str]] = field(default_factory=dict)
    # Put in train mode (BN statistics re-estimated, dropout active) but not trained: the
    # official preset's ``reestimate: [last_bn]`` or ``[head_dropout]``.
    reestimate: dict[str, list[str]] = field(default_factory=dict)

    @property
    def module_paths(self) -> list[str]:
        return list(dict.fromkeys(p for paths in self.groups.values() for p in paths))

    @property
    def mode_paths(self) -> list[str]:
        """Modules in train mode: the trained ones and the re-estimated ones."""
        extra = [p for paths in self.reestimate.values() for p in paths]
        return list(dict.fromkeys(self.module_paths + extra))


def plan_trainable(model: nn.Module, trainable: str | list[str | dict],
                   reestimate: list[str] | None = None) -> TrainablePlan:
    if trainable == "all":
        return TrainablePlan(everything=True)
    return TrainablePlan(everything=False, groups=resolve_groups(model, list(trainable)),
                         reestimate=resolve_groups(model, list(reestimate or [])))


def adapted_modules(model: nn.Module, plan: TrainablePlan, trained_only: bool = False
                    ) -> list[nn.Module]:
    """The adapted modules (``trained_only``: without the re-estimated-only ones); a path
    naming a parameter (``pos_embed``) is not a module."""
    modules = dict(model.named_modules())
    return [modules[p] for p in (plan.module_paths if trained_only else plan.mode_paths)
            if p in modules]


def adapted_parameters(model: nn.Module, plan: TrainablePlan) -> list[nn.Parameter]:
    params = dict(model.named_parameters())
    return [params[p] for p in plan.module_paths if p in params]


def apply_requires_grad(model: nn.Module, plan: TrainablePlan) -> None:
    for param in model.parameters():
        param.requires_grad_(plan.everything)
    if not plan.everything:
        for module in adapted_modules(model, plan, trained_only=True):
            for param in module.parameters():
                param.requires_grad_(True)
        for param in adapted_parameters(model, plan):
            param.requires_grad_(True)


def set_train_mode(model: nn.Module, plan: TrainablePlan) -> None:
    """Call at the start of every training epoch (evaluation puts the model in eval mode)."""
    if plan.everything:
        model.train()
        return
    model.eval()
    for module in adapted_modules(model, plan):
        module.train()


def adapted_batchnorms(model: nn.Module, plan: TrainablePlan) -> list[nn.Module]:
    found = {}
    for module in adapted_modules(model, plan):
        for sub in module.modules():
            if isinstance(sub, BN_TYPES):
                found[id(sub)] = sub
    return list(found.values())


def prepare_batchnorm(model: nn.Module, plan: TrainablePlan, momentum: float | None,
                      reset: bool) -> None:
    """Set the re-estimation momentum of the adapted BNs, and reset their statistics if asked.

    Momentum ``None`` re-estimates as an exact average over the stage's batches; it needs the
    reset, since PyTorch's cumulative average also counts the batches seen during training.
    """
    for bn in adapted_batchnorms(model, plan):
        bn.momentum = momentum
        if reset:
            bn.reset_running_stats()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
