"""The timm-style training options, each on a tiny model: EMA, mixup/cutmix, gradient
accumulation, samplers, class weights, layer decay, auto-augment/erasing, compile fallback."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvc.engine.best import BestEpoch
from fgvc.engine.compile import CompiledForward, maybe_compile
from fgvc.engine.ema import build_ema
from fgvc.engine.loop import EpochOptions, train_one_epoch
from fgvc.engine.losses import Objective, class_weights
from fgvc.engine.mixing import build_mixup
from fgvc.engine.optim import build_optimizer, set_lr
from fgvc.engine.samplers import build_sampler
from fgvc.recipes.recipe import OptimizerConfig
from fgvc.recipes.training import EmaConfig, MixupConfig, SamplerConfig


def bn_free_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def batches(n: int, size: int, seed: int = 1) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 8, 8, generator=g), torch.randint(0, 3, (size,), generator=g),
             torch.arange(size), 0) for _ in range(n)]


def train(model, loader, **kwargs):
    opt = build_optimizer(model, OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=1e-3))
    options = EpochOptions(lambda s: 0.1, torch.device("cpu"), channels_last=False, **kwargs)
    result = train_one_epoch(model, loader, opt, options)
    return result, opt


def test_ema_weights_are_the_running_average():
    model = bn_free_net()
    ema = build_ema(model, EmaConfig(decay=0.6, warmup=False))
    seen = []
    opt = build_optimizer(model, OptimizerConfig(lr=0.1))
    opt.register_step_post_hook(lambda *_: seen.append(
        {k: v.clone() for k, v in model.state_dict().items()}))
    train_one_epoch(model, batches(4, 2), opt, EpochOptions(
        lambda s: 0.1, torch.device("cpu"), channels_last=False,
        on_step=lambda s: ema.update(model, step=s)))
    expected = dict(seen[0])  # the first update copies the weights
    for weights in seen[1:]:
        expected = {k: 0.6 * expected[k] + 0.4 * weights[k] for k in expected}
    assert len(seen) == 4
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_ema_warmup_ramps_the_decay():
    ema = build_ema(bn_free_net(), EmaConfig(decay=0.9998, warmup=True))
    decays = [ema.get_decay(s) for s in (1, 2, 10, 10**6)]
    assert decays[0] == 0.0 and 0 < decays[1] < decays[2] < decays[3] == 0.9998


def test_mixup_targets_sum_to_one_and_the_loss_is_soft_target_cross_entropy():
    torch.manual_seed(0)
    import numpy as np

    np.random.seed(0)
    mixup = build_mixup(MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0), 5,
                        label_smoothing=0.1)
    objective = Objective(label_smoothing=0.1, mixup=mixup)
    images, labels = torch.randn(7, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 0, 1])
    mixed, targets, kept = objective.prepare(images.clone(), labels)
    assert mixed.shape[0] == targets.shape[0] == len(kept) == 6  # odd batch: one dropped
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert targets.min() >= 0.1 / 5 - 1e-6  # smoothing folded into the soft targets
    assert not torch.equal(mixed, images[:6])
    logits = torch.randn(6, 5)
    manual = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(objective.loss(logits, targets), manual)


def test_class_weights_inverse_sqrt():
    w = class_weights([0, 0, 0, 0, 1], 2, "inverse_sqrt")
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0]) * 5 / 3)
    assert class_weights([0, 1], 2, "none") is None
    objective = Objective(weights=w)
    logits, labels = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(objective.loss(logits, labels),
                               F.cross_entropy(logits, labels, weight=w))


@pytest.mark.parametrize("accumulate", [2, 4])
def test_accumulation_equals_the_larger_batch(accumulate):
    small = batches(accumulate, 3)
    large = [(torch.cat([b[0] for b in small]), torch.cat([b[1] for b in small]),
              torch.arange(3 * accumulate), 0)]
    a, b = bn_free_net(), bn_free_net()
    result_a, _ = train(a, small * 2, accumulate=accumulate)
    result_b, _ = train(b, large * 2)
    assert result_a.next_step == result_b.next_step == 2  # the schedule counts optimiser steps
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_accumulation_steps_on_a_short_last_group():
    result, _ = train(bn_free_net(), batches(5, 2), accumulate=2)
    assert result.next_step == 3


def test_class_balanced_frequencies_follow_the_power_law():
    labels = [0] * 100 + [1] * 25 + [2] * 4 + [3] * 1
    for power in (0.5, 0.0):
        cfg = SamplerConfig(name="class_balanced", power=power, len_factor=200)
        drawn = torch.tensor([labels[i] for i in build_sampler(cfg, labels, seed=0, epoch=0,
                                                               rank=0, world_size=1)])
        n = len(drawn)
        expected = torch.tensor([100, 25, 4, 1], dtype=torch.float64) ** power
        expected /= expected.sum()
        freq = torch.bincount(drawn, minlength=4).double() / n
        sigma = (expected * (1 - expected) / n).sqrt()
        assert ((freq - expected).abs() < 4 * sigma).all(), (power, freq, expected)


def shards(cfg, labels, epoch, world):
    return [list(build_sampler(cfg, labels, seed=7, epoch=epoch, rank=r, world_size=world))
            for r in range(world)]


def test_samplers_shard_like_distributed_sampler_and_repeat_exactly():
    labels = [i % 3 for i in range(10)]
    cfg = SamplerConfig(name="class_balanced")
    (whole,) = shards(cfg, labels, 0, 1)
    halves = shards(cfg, labels, 0, 2)
    assert [len(h) for h in halves] == [5, 5]
    assert sorted(halves[0] + halves[1]) == sorted(whole)  # same draw, split across processes
    assert shards(cfg, labels, 0, 2) == halves  # (seed, epoch) fixes it: exact resume
    assert shards(cfg, labels, 1, 2) != halves


def test_repeated_augmentation_repetitions_and_reshuffle():
    labels = list(range(10))
    cfg = SamplerConfig(name="repeated_augmentation", repetitions=3, len_factor=3)
    per_rank = shards(cfg, labels, 0, 3)
    for shard in per_rank:  # each process sees every image once: the copies are spread out
        assert sorted(shard) == labels
    (single,) = shards(cfg, labels, 0, 1)
    assert torch.bincount(torch.tensor(single)).tolist() == [3] * 10
    default = SamplerConfig(name="repeated_augmentation")  # len_factor 1: a third of the images
    epoch0, epoch1 = shards(default, labels, 0, 1)[0], shards(default, labels, 1, 1)[0]
    assert len(epoch0) == 10 and epoch0[:3] == [epoch0[0]] * 3
    assert epoch0 != epoch1  # reshuffled every epoch


def test_layer_decay_learning_rates_per_block():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=3, num_classes=3)
    resnet = timm.create_model("test_resnet", num_classes=3)
    for model, layer_of in ((vit, {"patch_embed.proj.weight": 0, "blocks.0.attn.qkv.weight": 1,
                                   "blocks.2.mlp.fc1.weight": 3, "head.weight": 4}),
                            (resnet, {"conv1.0.weight": 0, "layer1.0.conv1.weight": 1,
                                      "layer4.0.conv1.weight": 4, "fc.weight": 5})):
        opt = build_optimizer(model, OptimizerConfig(name="adamw", lr=1.0, layer_decay=0.5))
        set_lr(opt, 2.0)
        lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
        params = dict(model.named_parameters())
        top = max(layer_of.values())
        for name, layer in layer_of.items():
            assert lr_of[id(params[name])] == pytest.approx(2.0 * 0.5 ** (top - layer)), name


def test_layer_decay_on_a_model_without_layer_numbers_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer.layer_decay: Sequential does not number"):
        build_optimizer(bn_free_net(), OptimizerConfig(layer_decay=0.7))


def test_best_epoch_selection():
    best = BestEpoch("val_top1")
    assert [best.offer(e, v) for e, v in enumerate([10, 30, 30, 20], 1)] == [True, True, False,
                                                                             False]
    assert best.epoch == 2
    loss = BestEpoch("val_loss")
    for e, v in enumerate([1.0, 0.5, 0.7], 1):
        loss.offer(e, v)
    assert (loss.epoch, loss.value) == (2, 0.5)
    resumed = BestEpoch("val_top1")
    resumed.load_state_dict(best.state_dict())
    assert not resumed.offer(5, 25) and resumed.offer(6, 31)


def test_compile_falls_back_to_eager_with_one_log_line(monkeypatch, caplog):
    from torch._dynamo.exc import TorchDynamoException

    def broken(*args, **kwargs):  # only a compile failure falls back (test_errors_classified.py)
        raise TorchDynamoException("no working compiler\nlong details")

    monkeypatch.setattr(torch, "compile", lambda module, backend: broken)
    model = bn_free_net()
    wrapped = maybe_compile(model, True)
    x = torch.randn(2, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="fgvc.engine.compile"):
        out = [wrapped(x), wrapped(x)]
    torch.testing.assert_close(out[0], model(x))
    torch.testing.assert_close(out[1], model(x))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["model.compile: torch.compile failed here (TorchDynamoException: no "
                     "working compiler); running eagerly"]
    assert maybe_compile(model, False) is model
    assert list(wrapped.state_dict()) == [f"module.{k}" for k in model.state_dict()]


def test_compiled_forward_really_compiles():
    """One real torch.compile (dynamo with its eager backend: seconds, not inductor's minutes)."""
    model = bn_free_net()
    wrapped = CompiledForward(model, backend="eager")
    x = torch.randn(2, 3, 8, 8)
    y = wrapped(x)
    y.sum().backward()
    assert wrapped.__dict__["compiled"] is not None  # no fallback happened
    torch.testing.assert_close(y, model(x))
    assert model[0].weight.grad is not None


def test_train_resize_crop_and_timm_augmentation():
    from PIL import Image
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    from fgvc.transforms import DataConfig, ToModelInput, build_transform

    image = Image.new("RGB", (60, 40), (120, 80, 40))
    resize_crop = build_transform("train_resize_crop", 32, DataConfig(crop_pct=0.8))
    kinds = [type(op) for op in resize_crop.transforms]
    assert kinds[:2] == [T.Resize, T.RandomCrop] and T.RandomResizedCrop not in kinds
    assert resize_crop.transforms[0].size == 40 and resize_crop(image).shape == (3, 32, 32)

    full = build_transform("train", 32, DataConfig(), auto_augment="rand-m9-mstd0.5-inc1",
                           random_erasing=1.0)
    kinds = [type(op) for op in full.transforms]
    assert kinds[-3:] == [RandAugment, ToModelInput, RandomErasing]  # erasing on the tensor
    plain = build_transform("test", 32, DataConfig(), random_erasing=1.0)
    torch.manual_seed(0)
    erased = plain(image)
    assert not torch.equal(erased, build_transform("test", 32, DataConfig())(image))
