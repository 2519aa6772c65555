"""The model zoo: every architecture builds and runs, its adaptation groups resolve, weights load
from the common checkpoint shapes, and the MPN-COV square root is right."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from fgvc.models import GroupError, WeightsError, create_model, data_config, resolve_groups
from fgvc.models.catalog import SUPPORTED
from fgvc.models.mpncov import covariance, newton_schulz_sqrt, upper_triangle
from fgvc.recipes.recipe import ModelConfig

# Every network runs small (Cadene's fixed pooling is made adaptive on load); Inception's
# unpadded stem needs at least 75 px.
PROBE = {"pretrainedmodels:inceptionresnetv2": 96, "inception_resnet_v2": 96, "pnasnet5large": 96}
HEAVY = {"resnext101_32x16d", "resnext101_32x32d", "resnext101_32x48d"}  # structure on meta only


@pytest.mark.parametrize("arch", SUPPORTED)
def test_architecture_builds_runs_and_resolves_groups(arch):
    torch.manual_seed(0)
    device = "meta" if arch in HEAVY else "cpu"
    with torch.device(device):
        model = create_model(ModelConfig(arch=arch), num_classes=7).eval()
    size = PROBE.get(arch, 64)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size, device=device))
    assert out.shape == (1, 7)
    modules = dict(model.named_modules())
    groups = resolve_groups(model, ["classifier", "last_bn", "last_stage"])
    for paths in groups.values():
        assert paths and all(p in modules for p in paths)
    assert isinstance(modules[groups["classifier"][0]], nn.Linear)
    assert modules[groups["classifier"][0]].out_features == 7
    assert all(isinstance(modules[p], nn.BatchNorm2d) for p in groups["last_bn"])


@pytest.mark.parametrize("arch,last_bn,last_stage", [
    ("legacy_senet154", ["layer4.2.bn3"], ["layer4"]),
    ("resnet50", ["layer4.2.bn3"], ["layer4"]),
    ("inception_resnet_v2", ["conv2d_7b.bn"], ["block8"]),
    ("efficientnet_b0", ["bn2"], ["blocks.6"]),
    ("mpncov_resnet50", ["layer_reduce_bn"], ["layer4"]),
    ("pnasnet5large", None, ["cell_9", "cell_10", "cell_11"]),
])
def test_groups_are_the_papers(arch, last_bn, last_stage):
    with torch.device("meta"):
        model = create_model(ModelConfig(arch=arch), num_classes=3)
    groups = resolve_groups(model, ["last_bn", "last_stage"])
    if last_bn:
        assert groups["last_bn"] == last_bn
    assert groups["last_stage"] == last_stage


def test_unknown_family_asks_for_explicit_paths():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(GroupError, match=r"name its modules explicitly in the recipe, e\.g\. "
                                         r"trainable: \[classifier, last_bn, <module\.path>\]"):
        resolve_groups(model, ["last_stage"])
    assert resolve_groups(model, ["1", "4"]) == {"1": ["1"], "4": ["4"]}
    with pytest.raises(GroupError, match="did you mean"):
        resolve_groups(model, ["41"])


def test_the_torch_free_normalisations_are_timms():
    from timm.data import constants

    from fgvc import norms

    assert norms.NORMS == {
        "imagenet": (constants.IMAGENET_DEFAULT_MEAN, constants.IMAGENET_DEFAULT_STD),
        "inception": (constants.IMAGENET_INCEPTION_MEAN, constants.IMAGENET_INCEPTION_STD),
        "clip": (constants.OPENAI_CLIP_MEAN, constants.OPENAI_CLIP_STD)}


def test_data_config_follows_the_model_and_the_recipe():
    with torch.device("meta"):
        inception = create_model(ModelConfig(arch="inception_resnet_v2"), 3)
        cadene = create_model(ModelConfig(arch="pretrainedmodels:pnasnet5large"), 3)
    assert data_config(inception, ModelConfig(arch="x")).mean == (0.5, 0.5, 0.5)
    assert data_config(inception, ModelConfig(arch="x")).interpolation == "bicubic"
    assert data_config(cadene, ModelConfig(arch="x")).std == (0.5, 0.5, 0.5)
    override = ModelConfig(arch="x", mean=[0.1, 0.2, 0.3], interpolation="bilinear")
    assert data_config(inception, override).mean == (0.1, 0.2, 0.3)
    assert data_config(inception, override).interpolation == "bilinear"


# ---- weights ----


def tiny(arch: str = "resnet18", classes: int = 5) -> nn.Module:
    torch.manual_seed(1)
    return create_model(ModelConfig(arch=arch), classes).eval()


def outputs_equal(a: nn.Module, b: nn.Module, size: int = 64) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "model_state", "ddp", "fgvc"])
def test_torch_checkpoint_shapes_load(tmp_path, wrap):
    source = tiny()
    state = source.state_dict()
    if wrap == "ddp":
        payload = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "fgvc":
        payload = {"model": state, "stage": "adapt", "resolution": 64, "arch": "resnet18"}
    elif wrap == "plain":
        payload = state
    else:
        payload = {wrap: state, "epoch": 3}
    torch.save(payload, tmp_path / "w.pth")
    torch.manual_seed(99)
    target = create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "w.pth")), 5)
    assert outputs_equal(source, target)


def test_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    source = tiny()
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    target = create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "w.safetensors")), 5)
    assert outputs_equal(source, target)


def test_other_class_count_replaces_only_the_classifier(tmp_path):
    source = tiny(classes=1000)
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    target = create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "imagenet.pth")), 5)
    assert target.fc.out_features == 5
    assert torch.equal(target.layer4[1].bn2.weight, source.layer4[1].bn2.weight)


def test_missing_backbone_tensor_is_refused(tmp_path):
    state = tiny().state_dict()
    del state["layer3.0.conv1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match=r"broken\.pth: 1 model tensor\(s\) missing from the "
                                           r"checkpoint: layer3\.0\.conv1\.weight"):
        create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "broken.pth")), 5)


def test_wrong_architecture_is_refused(tmp_path):
    torch.save(tiny("resnet50").state_dict(), tmp_path / "r50.pth")
    with pytest.raises(WeightsError, match="shape mismatch"):
        create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "r50.pth")), 5)


def test_pickled_code_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="fgvc never unpickles code"):
        create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "evil.pth")), 5)
    assert not (tmp_path / "pwned").exists()


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        create_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "nope.pth")), 5)


@pytest.mark.parametrize("cadene,timm_name,size", [
    ("se_resnext101_32x4d", "legacy_seresnext101_32x4d", 224),
    ("inceptionresnetv2", "inception_resnet_v2", 299),
])
def test_cadene_checkpoint_loads_into_the_timm_port(tmp_path, cadene, timm_name, size):
    import pretrainedmodels

    torch.manual_seed(0)
    source = pretrainedmodels.__dict__[cadene](num_classes=1000, pretrained=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a mix-up would show
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(source.state_dict(), tmp_path / f"{cadene}.pth")
    target = create_model(ModelConfig(arch=timm_name, weights=str(tmp_path / f"{cadene}.pth")),
                          num_classes=1000)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(source(x), target.eval()(x), atol=1e-4)


def test_mpncov_loads_a_plain_resnet_backbone(tmp_path):
    torch.save(tiny("resnet50", classes=1000).state_dict(), tmp_path / "r50.pth")
    model = create_model(ModelConfig(arch="mpncov_resnet50", weights=str(tmp_path / "r50.pth")), 4)
    assert model.fc.in_features == 256 * 257 // 2
    state = model.state_dict()
    del state["layer_reduce_bn.weight"]  # a partial head is a broken checkpoint, not a new one
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"layer_reduce_bn\.weight"):
        create_model(ModelConfig(arch="mpncov_resnet50", weights=str(tmp_path / "partial.pth")), 4)


def test_pretrained_offline_is_a_clear_error():
    code = ("from fgvc.models import create_model\nfrom fgvc.recipes.recipe import ModelConfig\n"
            "create_model(ModelConfig(arch='resnet18', pretrained='imagenet'), 3)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "could not fetch pretrained weights for 'resnet18'" in result.stderr
    assert "hf-hub:timm/resnet18.a1_in1k" in result.stderr  # where the file would come from
    assert "model.weights: /path/to/checkpoint" in result.stderr


# ---- MPN-COV ----


def random_spd(batch: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, dim, generator=g, dtype=torch.float64)
    return a @ a.transpose(1, 2) / dim + 0.5 * torch.eye(dim, dtype=torch.float64)


def test_newton_schulz_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    spd = random_spd(4, 12, seed=0)
    ours = newton_schulz_sqrt(spd, iterations=30)
    for i in range(4):
        reference = np.real(sqrtm(spd[i].numpy()))
        np.testing.assert_allclose(ours[i].numpy(), reference, rtol=1e-8, atol=1e-10)
    # The paper's 5 iterations already come close on well-conditioned matrices.
    five = newton_schulz_sqrt(spd, iterations=5)
    assert (five - ours).abs().max() < 0.05 * ours.abs().max()


def test_gradients_flow_through_the_square_root():
    spd = random_spd(2, 5, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: newton_schulz_sqrt(m, iterations=8), (spd,))
    features = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    out = upper_triangle(newton_schulz_sqrt(covariance(features)))
    assert out.shape == (2, 21)
    out.sum().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0


def test_covariance_matches_numpy():
    x = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    flat = x.reshape(3, 35).numpy()
    np.testing.assert_allclose(covariance(x)[0].numpy(), np.cov(flat, bias=True), atol=1e-12)


def test_models_show_json(capsys):
    from fgvc.cli import main

    assert main(["models", "show", "--json", "resnet50", "mpncov_resnet101"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["resnet50"]["default_resolution"] == 224
    assert rows["resnet50"]["groups"]["last_bn"] == ["layer4.2.bn3"]
    assert rows["mpncov_resnet101"]["groups"]["last_bn"] == ["layer_reduce_bn"]
    assert rows["mpncov_resnet101"]["default_resolution"] == 448


def test_cadene_input_range_and_space_reach_the_transforms():
    from PIL import Image

    from fgvc.transforms import build_transform

    with torch.device("meta"):
        bninception = create_model(ModelConfig(arch="pretrainedmodels:bninception"), 3)
    cfg = data_config(bninception, ModelConfig(arch="x"))
    assert (cfg.input_range, cfg.input_space) == (255.0, "BGR")
    red = Image.new("RGB", (40, 40), (255, 0, 0))
    out = build_transform("test", 32, cfg)(red)
    # BGR order, 0-255 range, Cadene's mean (std 1): the red channel is last.
    assert torch.allclose(out[2], torch.full((32, 32), 255.0 - cfg.mean[2]))
    assert torch.allclose(out[0], torch.full((32, 32), 0.0 - cfg.mean[0]))
