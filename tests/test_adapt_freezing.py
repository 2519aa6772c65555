"""Stage 2 (FixRes adaptation): exactly the adapted part changes.

Trained: the classifier and the last BN's affine parameters. Re-estimated: that BN's running
statistics. Everything else, parameters and buffers, stays bit-identical.
"""

from __future__ import annotations

import torch

from fgvc.datasets import load_dataset
from fgvc.engine.context import RunContext
from fgvc.engine.stage import run_stage
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import parse_recipe


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_context(recipe_dict, tmp_path, trainable):
    recipe_dict["stages"][1]["trainable"] = trainable
    recipe = parse_recipe(recipe_dict)
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    torch.manual_seed(0)
    model = create_model(recipe.model, index.num_classes)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return RunContext(recipe, run_dir, index, model, data_config(model, recipe.model),
                      torch.device("cpu"))


def changed_keys(before, after) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_adapt_changes_only_classifier_and_last_bn(tiny_recipe_dict, tmp_path):
    ctx = make_context(tiny_recipe_dict, tmp_path, ["classifier", "last_bn"])
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    after = snapshot(ctx.model)

    # test_resnet's last block has a shortcut BN that also feeds the pooling.
    last_bns = ("layer4.0.bn2.", "layer4.0.downsample.2.")
    changed = changed_keys(before, after)
    allowed = {k for k in before if k.startswith(("fc.",) + last_bns)}
    assert changed <= allowed, f"frozen tensors changed: {sorted(changed - allowed)}"
    # Trained: classifier weights and bias, the BN's affine parameters.
    for key in ("fc.weight", "fc.bias", "layer4.0.bn2.weight", "layer4.0.bn2.bias"):
        assert key in changed, f"{key} was not trained"
    # Re-estimated, not trained: the BN's running statistics.
    for key in ("layer4.0.bn2.running_mean", "layer4.0.bn2.running_var"):
        assert key in changed, f"{key} was not re-estimated"
    # Every other BN kept its statistics: it was in eval mode.
    other_stats = [k for k in before if k.endswith(("running_mean", "running_var",
                                                    "num_batches_tracked"))
                   and not k.startswith(last_bns)]
    assert other_stats and not (set(other_stats) & changed)


def test_classifier_only_reestimates_nothing(tiny_recipe_dict, tmp_path):
    ctx = make_context(tiny_recipe_dict, tmp_path, ["classifier"])
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    changed = changed_keys(before, snapshot(ctx.model))
    assert changed == {"fc.weight", "fc.bias"}


def test_last_stage_trains_and_reestimates_the_whole_stage(tiny_recipe_dict, tmp_path):
    ctx = make_context(tiny_recipe_dict, tmp_path, ["classifier", "last_stage"])
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    changed = changed_keys(before, snapshot(ctx.model))
    assert all(k.startswith(("fc.", "layer4.")) for k in changed)
    assert "layer4.0.conv1.weight" in changed
    assert "layer4.0.bn1.running_mean" in changed
    assert not any(k.startswith("layer3.") for k in changed)


def test_explicit_module_paths_work(tiny_recipe_dict, tmp_path):
    ctx = make_context(tiny_recipe_dict, tmp_path, ["fc", "layer4.0.downsample.2"])
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    changed = changed_keys(before, snapshot(ctx.model))
    bn = "layer4.0.downsample.2."
    assert {"fc.weight", bn + "weight", bn + "running_mean"} <= changed
    assert all(k.startswith(("fc.", bn)) for k in changed)


def test_exact_reestimation_with_momentum_none(tiny_recipe_dict, tmp_path):
    """bn_momentum: null re-estimates the statistics as an exact average over the batches."""
    tiny_recipe_dict["stages"][1]["bn_momentum"] = None
    tiny_recipe_dict["stages"][1]["optimizer"] = {"lr": 1e-12}  # isolate the statistics
    tiny_recipe_dict["stages"][1]["batch_size"] = 4
    ctx = make_context(tiny_recipe_dict, tmp_path, ["last_bn"])
    bn = ctx.model.layer4[0].bn2
    inputs = []
    hook = bn.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().clone())
                                    if m.training else None)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    hook.remove()
    batch_means = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs])
    assert len(inputs) == bn.num_batches_tracked.item()
    assert torch.allclose(bn.running_mean, batch_means.mean(0), atol=1e-5)


# ---- LayerNorm networks (a ViT): no running statistics, the same bit-identity ----


def vit_context(tiny_recipe_dict, tmp_path, trainable):
    tiny_recipe_dict["model"] = {"arch": "vit_fgvc_tiny_patch8", "img_size": 32}
    tiny_recipe_dict["stages"][1]["optimizer"] = {"name": "adamw", "lr": 0.01}
    return make_context(tiny_recipe_dict, tmp_path, trainable)


def test_vit_adapt_changes_only_head_last_norm_and_pos_embed(tiny_recipe_dict, tmp_path):
    ctx = vit_context(tiny_recipe_dict, tmp_path, ["classifier", "last_norm", "pos_embed"])
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))  # at 48 px: a 6x6 grid from the 4x4 embedding
    changed = changed_keys(before, snapshot(ctx.model))
    assert changed == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias", "pos_embed"}


def test_vit_last_blocks_trains_only_the_last_block(tiny_recipe_dict, tmp_path):
    ctx = vit_context(tiny_recipe_dict, tmp_path, [{"last_blocks": 1}])
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    changed = changed_keys(before, snapshot(ctx.model))
    assert changed and all(k.startswith("blocks.5.") for k in changed)
    assert "blocks.5.attn.qkv.weight" in changed and "blocks.5.norm1.weight" in changed
