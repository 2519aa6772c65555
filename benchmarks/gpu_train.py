"""Training throughput on one GPU: fgvc's training step (``train_one_epoch``: bf16 autocast,
channels_last, fused optimizer, no host sync per step, uint8 batches normalised on the device)
against a plain timm-style loop (float batches normalised by the loader, the default foreach
SGD, ``loss.item()`` every step as timm's train script logs it) on the same model and the same
pre-loaded batches, so the input pipeline is out of the picture (benchmarks/input_pipeline.py
measures that). Interleaved rounds; prints images/s and min/median ratios, and each one's
model FLOP utilisation (MFU): the step's matmul and convolution FLOPs, forward and backward, as
torch's ``FlopCounterMode`` counts them, times steps per second, over the card's dense bf16
peak (NVIDIA's datasheet figure for known cards, or ``--peak-tflops``).

    python benchmarks/gpu_train.py --resolution 224 [--compile] [--batch 128] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from fgvc.engine.loop import EpochOptions, train_one_epoch
from fgvc.engine.optim import build_optimizer
from fgvc.recipes.recipe import OptimizerConfig
from fgvc.transforms import DataConfig, DeviceNormalize


def sync(args) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def model(args) -> torch.nn.Module:
    torch.manual_seed(0)
    m = timm.create_model(args.arch, num_classes=1000).to(args.device)
    m = m.to(memory_format=torch.channels_last)
    return torch.compile(m) if args.compile else m


class Batches(list):
    """A list of batches that also carries the loader's ``device_transform``."""

    device_transform = None


# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's datasheets; the first name
# found in the device name wins, so the more specific names come first.
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]


def peak_tflops(card: str, given: float | None) -> float | None:
    if given is not None:
        return given
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in card), None)


def step_flops(args) -> float:
    """FLOPs of one training step (forward and backward) at ``args.batch`` images, counted on
    two images (convolutions and matmuls scale with the batch) of an uncompiled copy."""
    from torch.utils.flop_counter import FlopCounterMode

    net = timm.create_model(args.arch, num_classes=1000).to(args.device)
    net = net.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, args.resolution, args.resolution, device=args.device)
    images = images.contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = net(images).float().logsumexp(1).mean()
        loss.backward()
    return counter.get_total_flops() / 2 * args.batch


def fgvc_round(args, batches: Batches, net, optimizer) -> float:
    sync(args)
    start = time.perf_counter()
    train_one_epoch(net, batches, optimizer, EpochOptions(lambda s: 0.01, torch.device(args.device)))
    sync(args)
    return len(batches) * args.batch / (time.perf_counter() - start)


def timm_round(args, batches: list, net, optimizer) -> float:
    sync(args)
    start = time.perf_counter()
    for images, labels in batches:
        images = images.to(args.device, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(args.device, non_blocking=True)
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    sync(args)
    return len(batches) * args.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    parser.add_argument("--peak-tflops", type=float,
                        help="the card's dense bf16 peak, TFLOP/s (default: known cards' "
                             "datasheet figure)")
    args = parser.parse_args()
    pin = (lambda t: t.pin_memory()) if args.device == "cuda" else (lambda t: t)
    torch.backends.cudnn.benchmark = True
    shape = (args.batch, 3, args.resolution, args.resolution)
    uint8 = [pin(torch.randint(0, 256, shape, dtype=torch.uint8)) for _ in range(4)]
    labels = [torch.randint(0, 1000, (args.batch,)) for _ in range(4)]
    normalize = DeviceNormalize(DataConfig())
    fgvc_batches = Batches((uint8[i % 4], labels[i % 4], labels[i % 4], 0)
                           for i in range(args.steps))
    fgvc_batches.device_transform = normalize
    floats = [pin(normalize(u)) for u in uint8]
    timm_batches = [(floats[i % 4], labels[i % 4]) for i in range(args.steps)]
    # One model and optimiser per contender, compiled once, trained on across the rounds.
    fgvc_net, timm_net = model(args), model(args)
    fgvc_opt = build_optimizer(fgvc_net, OptimizerConfig(name="sgd", lr=0.01))
    timm_opt = torch.optim.SGD(timm_net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    warm = Batches(fgvc_batches[:3])
    warm.device_transform = normalize
    fgvc_round(args, warm, fgvc_net, fgvc_opt)  # warm-up (and compilation)
    timm_round(args, timm_batches[:3], timm_net, timm_opt)
    rates = {"fgvc": [], "timm-style": []}
    for _ in range(args.repeats):
        rates["timm-style"].append(timm_round(args, timm_batches, timm_net, timm_opt))
        rates["fgvc"].append(fgvc_round(args, fgvc_batches, fgvc_net, fgvc_opt))
    ratios = [f / t for f, t in zip(rates["fgvc"], rates["timm-style"], strict=True)]
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{card}: {args.arch} {args.resolution} px, batch {args.batch}, "
          f"bf16, channels_last, compile {'on' if args.compile else 'off'}, {args.steps} steps")
    flops, peak = step_flops(args), peak_tflops(card, args.peak_tflops)
    print(f"  {flops / args.batch / 1e9:.1f} GFLOP per image per training step; card peak "
          + (f"{peak:.0f} TFLOP/s dense bf16" if peak else "unknown (--peak-tflops)"))
    for name, values in rates.items():
        achieved = statistics.median(values) / args.batch * flops / 1e12
        mfu = f", MFU {100 * achieved / peak:.1f}% of {peak:.0f}" if peak else ""
        print(f"  {name:10s} median {statistics.median(values):8.1f} images/s, "
              f"{achieved:7.1f} TFLOP/s{mfu}")
    print(f"  fgvc / timm-style: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
