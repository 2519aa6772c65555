"""Any backbone at any resolution: small members of each family run at their train resolution
and at 1.5x it; the adaptation groups of LayerNorm networks; the paper's networks exactly
(MPN-COV's 28x28 covariance at 448 px and the authors' checkpoint keys, PNASNet's last BNs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fgvc.models import GroupError, WeightsError, create_model, resolve_groups
from fgvc.models.resolution import ResolutionError, check_resolutions
from fgvc.recipes.recipe import ModelConfig

# (name, timm keyword arguments for a small member of the family, train resolution).
# Position-embedding families are built for the train resolution (model.img_size) and run at
# 1.5x through timm's dynamic image size.
SMALL = [
    ("vit_tiny_patch16_224", dict(depth=2, embed_dim=48, num_heads=3), 64),
    ("deit_tiny_distilled_patch16_224", dict(depth=2, embed_dim=48, num_heads=3), 64),
    ("eva02_tiny_patch14_224", dict(depth=2, embed_dim=48, num_heads=3), 56),
    ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1), embed_dim=24,
                                          num_heads=(1, 1, 1, 1)), 64),
    ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), 64),
    ("efficientnet_b0", {}, 64),
    ("regnetx_002", {}, 64),
    ("resnet18", {}, 64),
    ("pretrainedmodels:se_resnext50_32x4d", None, 64),
    ("mpncov_resnet50", dict(reduced_dim=32), 64),
]
# Cadene's giants take tens of seconds per CPU forward here: their shapes run on the meta device.
GIANTS = [("pretrainedmodels:inceptionresnetv2", 96), ("pretrainedmodels:pnasnet5large", 64),
          ("inception_resnet_v2", 96), ("pnasnet5large", 64)]


@pytest.mark.parametrize("arch,kwargs,size", SMALL, ids=[a for a, _, _ in SMALL])
def test_small_family_member_runs_at_train_and_1_5x_resolution(arch, kwargs, size):
    torch.manual_seed(0)
    model = create_model(ModelConfig(arch=arch, img_size=size), 5, **(kwargs or {})).eval()
    for resolution in (size, size * 3 // 2):
        x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all(), (arch, resolution)


@pytest.mark.parametrize("arch,size", GIANTS)
def test_cadene_and_giant_networks_run_at_any_size(arch, size):
    with torch.device("meta"):
        model = create_model(ModelConfig(arch=arch), 5).eval()
    check_resolutions(model, arch, [size, size * 3 // 2, 331, 448])
    if arch.startswith("pretrainedmodels:"):  # the fixed AvgPool2d became adaptive on load
        assert not any(type(m) is nn.AvgPool2d and m.kernel_size in (8, 11)
                       for m in model.children())


def test_an_impossible_size_is_one_clear_line():
    with torch.device("meta"):
        model = create_model(ModelConfig(arch="eva02_tiny_patch14_224"), 5)
    with pytest.raises(ResolutionError, match=r"model 'eva02_tiny_patch14_224' cannot run at "
                                              r"100 px \(.*patch size \(14\).*\); nearest sizes "
                                              r"that work: 98 px or 112 px"):
        check_resolutions(model, "eva02_tiny_patch14_224", [98, 100])


# ---- groups of LayerNorm networks ----


@pytest.mark.parametrize("arch,last_norm,pos_embed,last_block", [
    ("vit_small_patch16_224", ["norm"], ["pos_embed"], ["blocks.11"]),
    ("vit_base_patch16_clip_224", ["norm"], ["pos_embed"], ["blocks.11"]),
    ("deit_small_patch16_224", ["norm"], ["pos_embed"], ["blocks.11"]),
    ("vit_small_patch14_reg4_dinov2", ["norm"], ["pos_embed"], ["blocks.11"]),
    ("eva02_base_patch14_224", ["fc_norm"], ["pos_embed"], ["blocks.11"]),
    ("swin_tiny_patch4_window7_224", ["norm"], None, ["layers.3.blocks.1"]),
    ("convnext_tiny", ["head.norm"], None, ["stages.3.blocks.2"]),
    ("efficientnet_b0", ["bn2"], None, ["blocks.6.0"]),
    ("regnety_040", ["s4.b2.conv3.bn"], None, ["s4.b2"]),
    ("resnet50", ["layer4.2.bn3"], None, ["layer4.2"]),
])
def test_layernorm_and_modern_groups(arch, last_norm, pos_embed, last_block):
    with torch.device("meta"):
        model = create_model(ModelConfig(arch=arch), 3)
    groups = resolve_groups(model, ["last_norm", "last_bn", {"last_blocks": 1}])
    assert groups["last_norm"] == last_norm == groups["last_bn"]
    assert groups["last_blocks: 1"][-1:] == last_block
    if pos_embed:
        assert resolve_groups(model, ["pos_embed"])["pos_embed"] == pos_embed
    else:
        with pytest.raises(GroupError, match="no absolute position embedding"):
            resolve_groups(model, ["pos_embed"])
    with pytest.raises(GroupError, match="asks for more blocks"):
        resolve_groups(model, [{"last_blocks": 10_000}])


def test_last_blocks_are_the_last_in_running_order():
    with torch.device("meta"):
        vit = create_model(ModelConfig(arch="vit_small_patch16_224"), 3)
        resnet = create_model(ModelConfig(arch="resnet50"), 3)
    assert resolve_groups(vit, [{"last_blocks": 3}])["last_blocks: 3"] == [
        "blocks.9", "blocks.10", "blocks.11"]
    assert resolve_groups(resnet, [{"last_blocks": 4}])["last_blocks: 4"] == [
        "layer3.5", "layer4.0", "layer4.1", "layer4.2"]


# ---- the paper's networks, exactly ----


def directly_feeding_bns(model: nn.Module, size: int) -> set[str]:
    """BNs with a path to the classifier's input that crosses no other BN, found independently
    of fgvc's graph walk: every BN's output is detached and a fresh leaf added to it, so a leaf
    gets a gradient only through paths free of other BNs (meta device: connectivity only)."""
    leaves: dict[str, torch.Tensor] = {}
    pooled: list[torch.Tensor] = []

    def hook(name):
        def fn(_m, _i, out):
            leaves[name] = torch.zeros_like(out, requires_grad=True)
            return out.detach() + leaves[name]
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.BatchNorm2d)]
    handles.append(model.last_linear.register_forward_pre_hook(lambda _m, i: pooled.append(i[0])))
    model.eval()
    model(torch.zeros(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    names = list(leaves)
    grads = torch.autograd.grad(pooled[0].sum(), [leaves[n] for n in names], allow_unused=True)
    return {n for n, g in zip(names, grads, strict=True) if g is not None}


@pytest.mark.parametrize("arch", ["pretrainedmodels:pnasnet5large", "pnasnet5large"])
def test_pnasnet_last_bn_is_every_bn_reaching_the_pooling(arch):
    with torch.device("meta"):
        model = create_model(ModelConfig(arch=arch), 3)
    last_bn = resolve_groups(model, ["last_bn"])["last_bn"]
    reaching = directly_feeding_bns(model, 331)
    assert set(last_bn) == {n for n in reaching if n.startswith("cell_11.")}
    assert len(last_bn) == 8
    assert all(isinstance(dict(model.named_modules())[p], nn.BatchNorm2d) for p in last_bn)


def test_mpncov_covariance_sees_28x28_at_448():
    with torch.device("meta"):
        model = create_model(ModelConfig(arch="mpncov_resnet50"), 200).eval()
    seen = []
    model.cov_pool.register_forward_pre_hook(lambda _m, i: seen.append(tuple(i[0].shape)))
    model(torch.zeros(1, 3, 448, 448, device="meta"))
    assert seen == [(1, 256, 28, 28)]


# The head of the authors' release (fast-MPN-COV, src/network/mpncovresnet.py), by key name.
OFFICIAL_HEAD = ["layer_reduce.weight", "layer_reduce_bn.weight", "layer_reduce_bn.bias",
                 "layer_reduce_bn.running_mean", "layer_reduce_bn.running_var",
                 "fc.weight", "fc.bias"]


def official_checkpoint(path, classes: int = 10, drop: str | None = None,
                        extra: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint in the authors' layout: torchvision ResNet names, their head names, no BN
    batch counters (PyTorch 0.3), under ``state_dict`` with DataParallel's ``module.``."""
    g = torch.Generator().manual_seed(7)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in create_model(
            ModelConfig(arch="mpncov_resnet50"), classes).state_dict().items()
            if not k.endswith("num_batches_tracked")}
    state = {k: torch.rand(s, generator=g) + 0.5 for k, s in shapes.items()}
    assert set(OFFICIAL_HEAD) <= set(state)
    assert {"conv1.weight", "layer4.0.downsample.0.weight", "layer4.2.bn3.running_var"} <= set(state)
    if drop:
        del state[drop]
    if extra:
        state[extra] = torch.zeros(3)
    torch.save({"epoch": 1, "arch": "mpncovresnet50",
                "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def test_mpncov_loads_the_authors_checkpoint_with_every_tensor_used(tmp_path):
    state = official_checkpoint(tmp_path / "official.pth")
    model = create_model(ModelConfig(arch="mpncov_resnet50", weights=str(tmp_path / "official.pth")),
                         10)
    own = model.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize("drop,extra,names", [
    ("layer_reduce_bn.running_var", None, "layer_reduce_bn.running_var"),
    (None, "layer_reduce.bias", "layer_reduce.bias"),
])
def test_mpncov_refuses_a_checkpoint_with_unused_or_missing_tensors(tmp_path, drop, extra, names):
    official_checkpoint(tmp_path / "bad.pth", drop=drop, extra=extra)
    with pytest.raises(WeightsError, match=names.replace(".", r"\.")):
        create_model(ModelConfig(arch="mpncov_resnet50", weights=str(tmp_path / "bad.pth")), 10)


def test_local_weights_of_another_grid_are_resampled(tmp_path):
    """A ViT checkpoint saved at 32 px (4x4 patches) loads into the same ViT built for 48 px
    (6x6): timm's conversion for the family resamples the position embedding."""
    source = create_model(ModelConfig(arch="vit_fgvc_tiny_patch8", img_size=32), 4)
    torch.save(source.state_dict(), tmp_path / "vit32.pth")
    target = create_model(ModelConfig(arch="vit_fgvc_tiny_patch8", img_size=48,
                                      weights=str(tmp_path / "vit32.pth")), 4)
    assert target.pos_embed.shape == (1, 36, 96)
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_tagged_arch_brings_its_data_settings():
    from fgvc.models import data_config

    cfg = ModelConfig(arch="convnext_base.fb_in22k_ft_in1k_384")
    with torch.device("meta"):
        model = create_model(cfg, 3)
    data = data_config(model, cfg)
    assert (data.interpolation, data.crop_pct) == ("bicubic", 1.0)
    untagged = ModelConfig(arch="convnext_base")
    assert data_config(model, untagged).crop_pct == 224 / 256  # the paper's, without a tag


def test_hf_hub_name_offline_is_one_line_saying_where_the_files_go(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from fgvc.models import create_model\nfrom fgvc.recipes.recipe import ModelConfig\n"
            "create_model(ModelConfig(arch='hf-hub:timm/not_cached_here'), 3)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot read 'hf-hub:timm/not_cached_here' from the Hugging Face Hub" in last
    assert f"{tmp_path / 'hf' / 'hub'}/models--timm--not_cached_here" in last
    assert "HF_HUB_OFFLINE=1" in last


def test_conv_stem_vit_of_the_vit_quickstart():
    """``vit_fgvc_tiny_convstem``: an 8x8 token grid at 64 px, 10x10 at 80 px (the position
    embedding interpolated), and the ViT groups of stage 2 resolve past its BN stem."""
    model = create_model(ModelConfig(arch="vit_fgvc_tiny_convstem", img_size=64), 8).eval()
    assert model.pos_embed.shape == (1, 64, 96)
    for size in (64, 80, 96):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 8)
    groups = resolve_groups(model, ["classifier", "last_norm", "pos_embed"])
    assert groups == {"classifier": ["head"], "last_norm": ["fc_norm"],
                      "pos_embed": ["pos_embed"]}
