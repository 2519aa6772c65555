"""Weight decay as timm decides it, on both optimiser paths: biases, norms and what the model's
``no_weight_decay()`` names (a ViT's ``pos_embed``, ``cls_token``) get none; frozen parameters
are left out; ``decay_all`` decays biases and norms too, never what the model names."""

from __future__ import annotations

import pytest
import timm
import torch

from fgvc.engine.freeze import apply_requires_grad, plan_trainable
from fgvc.engine.optim import build_optimizer
from fgvc.recipes.recipe import OptimizerConfig

WD = 0.05


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=3)


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3)


def decay_of(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Parameter name -> its group's weight decay; each parameter in exactly one group."""
    names = {id(p): n for n, p in model.named_parameters()}
    found = [(names[id(p)], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]]
    assert len(found) == len(dict(found)), "a parameter sits in two groups"
    return dict(found)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_vit_exempts_biases_norms_and_its_no_weight_decay_names(name):
    vit = tiny_vit()
    decay = decay_of(vit, build_optimizer(vit, OptimizerConfig(name=name, weight_decay=WD)))
    assert set(decay) == {n for n, _ in vit.named_parameters()}
    for undecayed in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "norm.bias",
                      "blocks.1.attn.qkv.bias", "head.bias"):
        assert decay[undecayed] == 0.0, undecayed
    for decayed in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.weight"):
        assert decay[decayed] == WD, decayed


def test_groups_are_timms_create_optimizer_v2_groups():
    vit = tiny_vit()
    ours = decay_of(vit, build_optimizer(vit, OptimizerConfig(name="adamw", weight_decay=WD)))
    theirs = decay_of(vit, timm.optim.create_optimizer_v2(vit, "adamw", lr=0.1, weight_decay=WD))
    assert ours == theirs


def test_frozen_parameters_are_left_out_and_a_trained_pos_embed_is_not_decayed():
    """An adapt stage training the classifier and the position embedding (re-learned at K_test):
    only those reach the optimiser, and pos_embed gets no weight decay."""
    vit = tiny_vit()
    apply_requires_grad(vit, plan_trainable(vit, ["classifier", "pos_embed"]))
    decay = decay_of(vit, build_optimizer(vit, OptimizerConfig(weight_decay=WD)))
    assert decay == {"pos_embed": 0.0, "head.bias": 0.0, "head.weight": WD}


def test_a_step_shrinks_only_the_decayed_parameters():
    """With zero gradients an SGD step is the decay alone: p <- p (1 - lr wd)."""
    vit = tiny_vit()
    apply_requires_grad(vit, plan_trainable(vit, ["classifier", "pos_embed"]))
    optimizer = build_optimizer(vit, OptimizerConfig(lr=0.5, momentum=0.0, weight_decay=WD))
    before = {n: p.detach().clone() for n, p in vit.named_parameters()}
    for p in vit.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    params = dict(vit.named_parameters())
    torch.testing.assert_close(params["head.weight"], before["head.weight"] * (1 - 0.5 * WD))
    assert torch.equal(params["pos_embed"], before["pos_embed"])
    assert torch.equal(params["head.bias"], before["head.bias"])
    assert torch.equal(params["cls_token"], before["cls_token"])  # frozen


def test_resnet_decays_convolutions_and_the_classifier_weight_only():
    resnet = tiny_resnet()
    optimizer = build_optimizer(resnet, OptimizerConfig(weight_decay=WD))
    decay = decay_of(resnet, optimizer)
    params = dict(resnet.named_parameters())
    assert {n for n, d in decay.items() if d == WD} == {n for n, p in params.items()
                                                        if p.ndim > 1}
    assert decay["bn1.weight"] == decay["fc.bias"] == 0.0
    # The decayed group first, as before: a checkpoint's optimiser state matches by position.
    assert [g["weight_decay"] for g in optimizer.param_groups] == [WD, 0.0]
    assert isinstance(optimizer, torch.optim.SGD)


def test_decay_all_decays_biases_and_norms_but_not_what_the_model_names():
    resnet = tiny_resnet()
    opt = build_optimizer(resnet, OptimizerConfig(weight_decay=WD, decay_all=True))
    assert [g["weight_decay"] for g in opt.param_groups] == [WD]  # the authors' release
    vit = tiny_vit()
    decay = decay_of(vit, build_optimizer(vit, OptimizerConfig(weight_decay=WD, decay_all=True)))
    assert decay["blocks.0.norm1.weight"] == decay["head.bias"] == WD
    assert decay["pos_embed"] == decay["cls_token"] == 0.0


@pytest.mark.parametrize("decay_all", [False, True])
def test_layer_decay_path_exempts_the_same_parameters(decay_all):
    vit = tiny_vit()
    cfg = OptimizerConfig(name="adamw", weight_decay=WD, layer_decay=0.7, decay_all=decay_all)
    optimizer = build_optimizer(vit, cfg)
    decay = decay_of(vit, optimizer)
    assert set(decay) == {n for n, _ in vit.named_parameters()}
    assert decay["pos_embed"] == decay["cls_token"] == 0.0
    assert decay["blocks.0.attn.qkv.weight"] == WD
    assert decay["blocks.0.norm1.weight"] == (WD if decay_all else 0.0)
    assert len({g["lr_scale"] for g in optimizer.param_groups}) > 1  # still layer-wise


def test_layer_decay_leaves_frozen_parameters_out():
    vit = tiny_vit()
    apply_requires_grad(vit, plan_trainable(vit, ["classifier", "pos_embed"]))
    cfg = OptimizerConfig(name="adamw", weight_decay=WD, layer_decay=0.7)
    assert decay_of(vit, build_optimizer(vit, cfg)) == {"pos_embed": 0.0, "head.bias": 0.0,
                                                        "head.weight": WD}
