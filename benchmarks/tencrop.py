"""10-crop preprocessing: fgvc's MultiCrop (decode, resize and normalise once, slice the crops)
against the naive torchvision pipeline (TenCrop on the PIL image, then ToTensor and Normalize
per crop). Same images, same output (checked), one run; prints images/s and the ratio.

    .venv/bin/python benchmarks/tencrop.py [--images 200] [--resolution 448]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from fgvc.inference.tta import MultiCrop
from fgvc.transforms import DataConfig, resize_size


def images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        w, h = int(rng.integers(500, 800)), int(rng.integers(400, 800))
        out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return out


def naive(resolution: int, cfg: DataConfig) -> T.Compose:
    per_crop = T.Compose([T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
    return T.Compose([T.Resize(resize_size(resolution, cfg.crop_pct)), T.TenCrop(resolution),
                      T.Lambda(lambda crops: torch.stack([per_crop(c) for c in crops]))])


def rate(transform, batch: list[Image.Image], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image in batch:
            transform(image)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=448)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg, batch = DataConfig(), images(args.images)
    ours, theirs = MultiCrop(args.resolution, cfg, "ten_crop"), naive(args.resolution, cfg)
    assert torch.allclose(ours(batch[0]), theirs(batch[0]), atol=1e-6), "outputs differ"
    fgvc_rate, naive_rate = rate(ours, batch), rate(theirs, batch)
    print(f"10-crop at {args.resolution} px, {args.images} images, 1 thread")
    print(f"  fgvc MultiCrop            {fgvc_rate:8.1f} images/s")
    print(f"  torchvision TenCrop naive {naive_rate:8.1f} images/s")
    print(f"  ratio fgvc / naive        {fgvc_rate / naive_rate:8.2f}x")


if __name__ == "__main__":
    main()
