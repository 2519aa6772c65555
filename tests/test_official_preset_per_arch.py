"""``preset: official`` follows the architecture, as the authors' release did: ResNet-50's
set-up by default, a ten times smaller lr and test DA2 for the WSL ResNeXt-101s, and for
PNASNet-5-Large the last three cells trained with the dropout before the classifier in train
mode while the rest of the network stays in eval mode."""

from __future__ import annotations

import pytest
import torch

from fgvc.engine.freeze import apply_requires_grad, plan_trainable, set_train_mode
from fgvc.errors import GroupError
from fgvc.models.config import ModelConfig
from fgvc.models.groups import resolve_groups
from fgvc.models.resolution import meta_model
from fgvc.recipes.presets import official_branch
from fgvc.recipes.recipe import parse_recipe
from tests.test_adapt_freezing import changed_keys, snapshot

PNAS_ADAPTED = ("last_linear", "cell_9", "cell_10", "cell_11")


@pytest.mark.parametrize("arch, branch", [
    ("resnet50", "resnet50"), ("test_resnet", "resnet50"), ("vit_base_patch16_224", "resnet50"),
    ("legacy_senet154", "resnet50"),
    ("pnasnet5large", "pnasnet"), ("pnasnet5large.tf_in1k", "pnasnet"),
    ("pretrainedmodels:pnasnet5large", "pnasnet"),
    ("resnext101_32x48d", "resnext_wsl"), ("resnext101_32x16d", "resnext_wsl"),
    ("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", "resnext_wsl"),
    ("resnext101_32x8d", "resnet50"),  # torchvision's weights by default
    ("resnext101_32x16d.fb_swsl_ig1b_ft_in1k", "resnet50"),  # semi-weakly supervised
    ("resnext101_32x16d.fb_ssl_yfcc100m_ft_in1k", "resnet50"),
])
def test_the_branch_follows_model_arch(arch, branch):
    assert official_branch(arch).name == branch


def adapt_stage(recipe_dict: dict, arch: str, **fields):
    recipe_dict["model"] = {"arch": arch}
    recipe_dict["stages"][1] = {"name": "adapt", "resolution": 48, "batch_size": 64,
                                "preset": "official", **fields}
    return parse_recipe(recipe_dict).stage("adapt")


@pytest.mark.parametrize("arch, trainable, train_mode, lr, epochs, augment", [
    ("test_resnet", ["classifier"], ["last_bn"], 0.008, 60, "test"),
    ("resnext101_32x48d", ["classifier"], ["last_bn"], 0.0008, 11, "test2"),
    ("pnasnet5large", ["classifier", "last_stage"], ["head_dropout"], 0.0008, 1, "test"),
])
def test_each_branch_fills_the_authors_fields(tiny_recipe_dict, arch, trainable, train_mode,
                                              lr, epochs, augment):
    stage = adapt_stage(tiny_recipe_dict, arch)
    assert stage.trainable == trainable and stage.reestimate == train_mode
    assert stage.optimizer.lr == pytest.approx(lr * 64 / 512)  # linear in the batch
    assert (stage.epochs, stage.augment) == (epochs, augment)
    assert (stage.optimizer.name, stage.optimizer.momentum, stage.optimizer.weight_decay,
            stage.optimizer.decay_all) == ("sgd", 0.9, 1e-4, True)
    assert (stage.schedule.name, stage.schedule.every, stage.schedule.gamma) == ("step", 30, 0.1)
    assert stage.bn_momentum == 0.1


def test_fields_the_recipe_sets_win_over_the_branch(tiny_recipe_dict):
    stage = adapt_stage(tiny_recipe_dict, "pnasnet5large", trainable=["classifier"], epochs=3,
                        optimizer={"lr": 0.01})
    assert stage.trainable == ["classifier"] and stage.reestimate == ["head_dropout"]
    assert (stage.epochs, stage.optimizer.lr, stage.optimizer.decay_all) == (3, 0.01, True)


def test_a_changed_arch_changes_the_branch_through_overrides(tiny_recipe_dict, tmp_path):
    import yaml

    from fgvc.recipes.recipe import load_recipe

    tiny_recipe_dict["stages"][1] = {"name": "adapt", "resolution": 48, "preset": "official"}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert load_recipe(path).stage("adapt").epochs == 60
    assert load_recipe(path, ["model.arch=pnasnet5large"]).stage("adapt").epochs == 1


@pytest.mark.parametrize("arch, dropout", [("pnasnet5large", "head_drop"),
                                           ("pretrainedmodels:pnasnet5large", "dropout")])
def test_pnasnet_groups_resolve_on_the_real_network(arch, dropout):
    """On the meta device (no memory): the authors' trainable set (last_linear and cells 9-11,
    every parameter inside them) and their modes (those modules and the dropout in train mode,
    every other module, the stem's and cell 8's BNs included, in eval mode)."""
    if arch.startswith("pretrainedmodels:"):
        pytest.importorskip("pretrainedmodels")
    model = meta_model(ModelConfig(arch=arch), 10)
    plan = plan_trainable(model, ["classifier", "last_stage"], ["head_dropout"])
    assert plan.groups == {"classifier": ["last_linear"],
                           "last_stage": ["cell_9", "cell_10", "cell_11"]}
    assert plan.reestimate == {"head_dropout": [dropout]}
    apply_requires_grad(model, plan)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in model.named_parameters() if n.startswith(PNAS_ADAPTED)}
    set_train_mode(model, plan)
    in_train = {n for n, m in model.named_modules() if m.training}
    expected = {n for n, _ in model.named_modules()
                if n.startswith(PNAS_ADAPTED) or n == dropout}
    assert in_train == expected


def test_head_dropout_on_a_network_without_one_is_one_clear_line():
    model = meta_model(ModelConfig(arch="test_resnet"), 3)
    with pytest.raises(GroupError) as err:
        resolve_groups(model, ["head_dropout"])
    assert "no dropout module before its classifier" in str(err.value)
    assert "\n" not in str(err.value)


def test_pnasnet_adapt_step_drops_in_the_head_and_keeps_the_rest_in_eval():
    """One optimiser step of the PNASNet branch on the real network (32 px, random weights):
    the head dropout drops (outputs 0 or 2x the input at p=0.5), the adapted cells' BNs
    re-estimate their statistics, the stem's and cell 8's keep theirs, frozen tensors stay
    bit-identical, and evaluation afterwards runs the dropout as the identity."""
    from fgvc.engine.loop import EpochOptions, train_one_epoch
    from fgvc.engine.optim import build_optimizer
    from fgvc.models import create_model
    from fgvc.recipes.recipe import OptimizerConfig

    torch.manual_seed(0)
    model = create_model(ModelConfig(arch="pnasnet5large", drop_rate=0.5), 4)
    plan = plan_trainable(model, ["classifier", "last_stage"], ["head_dropout"])
    apply_requires_grad(model, plan)
    calls = []
    model.head_drop.register_forward_hook(
        lambda m, inputs, out: calls.append((m.training, inputs[0].detach(), out.detach())))
    bn_modes = []
    for bn in (model.conv_0.bn, model.cell_8.conv_1x1.bn, model.cell_9.conv_1x1.bn):
        bn.register_forward_hook(lambda m, _i, _o: bn_modes.append(m.training))
    before = snapshot(model)
    set_train_mode(model, plan)
    optimizer = build_optimizer(model, OptimizerConfig(lr=0.01, weight_decay=1e-4, decay_all=True))
    batch = (torch.randn(2, 3, 32, 32), torch.tensor([0, 3]), torch.arange(2), 0)
    train_one_epoch(model, [batch], optimizer,
                    EpochOptions(lambda s: 0.01, torch.device("cpu"), channels_last=False))

    assert bn_modes == [False, False, True]
    training, x, out = calls[0]
    assert training
    dropped = (out == 0) & (x != 0)
    assert dropped.any() and not dropped.all()
    torch.testing.assert_close(out[~dropped], 2 * x[~dropped])
    changed = changed_keys(before, snapshot(model))
    assert changed and all(k.startswith(PNAS_ADAPTED) for k in changed)
    assert {"cell_9.conv_1x1.bn.running_mean", "cell_11.conv_1x1.conv.weight",
            "last_linear.weight"} <= changed
    model.eval()
    with torch.no_grad():
        model(batch[0])
    assert not calls[1][0] and torch.equal(calls[1][1], calls[1][2])


@pytest.mark.parametrize("cache_gb", [4.0, 0.0])
def test_the_stage_runner_keeps_the_head_dropout_in_train_mode(tiny_recipe_dict, tmp_path,
                                                               cache_gb):
    """Through ``run_stage``, with the adapt cache (the frozen part run once; ConvNeXt traces)
    and without: the dropout is in train mode in every training forward and drops; the
    frozen stem stays in eval mode."""
    from fgvc.datasets import load_dataset
    from fgvc.engine.context import RunContext
    from fgvc.engine.stage import run_stage
    from fgvc.models import create_model, data_config

    tiny_recipe_dict["model"] = {"arch": "test_convnext", "drop_rate": 0.5}
    tiny_recipe_dict["stages"][1].update(trainable=["classifier"], reestimate=["head_dropout"],
                                         adapt_cache_gb=cache_gb, epochs=2)
    recipe = parse_recipe(tiny_recipe_dict)
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    torch.manual_seed(0)
    model = create_model(recipe.model, index.num_classes)
    (tmp_path / "run").mkdir()
    ctx = RunContext(recipe, tmp_path / "run", index, model, data_config(model, recipe.model),
                     torch.device("cpu"))
    drops, stem = [], []
    model.head.drop.register_forward_hook(
        lambda m, inputs, out: drops.append((m.training, (out == 0) & (inputs[0] != 0)))
        if torch.is_grad_enabled() else None)
    model.stem.register_forward_hook(lambda m, _i, _o: stem.append(m.training))
    run_stage(ctx, recipe.stage("adapt"))
    assert len(drops) == 2 * 3  # 24 images in batches of 8, two epochs
    assert all(training for training, _ in drops)
    assert torch.cat([d.flatten() for _, d in drops]).float().mean() == pytest.approx(0.5, abs=0.15)
    assert stem and not any(stem)
