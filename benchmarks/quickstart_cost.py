"""Estimate what the quickstart's larger validation split costs, in CPU time, on this machine.

On a shared machine wall-clock times of the whole demo mean little; CPU-time ratios of its parts
measured in one process are steadier. This times (CPU seconds, ResNet-18, 2 threads, random
tensors, no data loading) one training epoch of 800 images at 64 px and an evaluation pass of
1,920 images at each evaluation resolution, and prints the demo's cost before and after the
change in units of training epochs:

    python benchmarks/quickstart_cost.py

Old: 320 validation images, validation every epoch of both stages, no activation pass.
New: 1,920 validation images, validation every 4th train epoch and every 2nd adapt epoch,
activation statistics on 256 images at each resolution before and after adaptation.
"""

from __future__ import annotations

import resource

import timm
import torch
import torch.nn.functional as F

RESOLUTIONS = (64, 80, 96, 112, 128)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    torch.set_num_threads(2)
    model = timm.create_model("resnet18", num_classes=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 8, (32,))
    model.train()
    start = cpu()
    for _ in range(25):  # 800 images
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    epoch = cpu() - start
    print(f"training epoch (800 images @64): {epoch:.1f} CPU s", flush=True)
    model.eval()
    passes = {}
    with torch.no_grad():
        for res in RESOLUTIONS:
            batch = torch.randn(64, 3, res, res)
            start = cpu()
            for _ in range(30):  # 1,920 images
                model(batch)
            passes[res] = (cpu() - start) / epoch
            print(f"evaluation of 1,920 images @{res}: {passes[res]:.2f} training epochs",
                  flush=True)
    adapt_epoch = passes[80] * 800 / 1920  # forward-dominated: only the head is trained
    final = 2 * sum(passes.values())
    old = 16 + 16 * passes[64] / 6 + 2 * adapt_epoch + 2 * passes[80] / 6 + final / 6
    new = 16 + 4 * passes[64] + 2 * adapt_epoch + 1 * passes[80] + final + final * 256 / 1920
    print(f"old demo ~{old:.1f} training epochs, new ~{new:.1f}: ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
