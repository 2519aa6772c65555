"""10-crop test-time augmentation end to end, decoding included: fgvc's fast path
(``MultiCrop.load``: libjpeg-turbo decode of the full image, as test DA defines it, one resize,
uint8 crops sliced from it, then one ``DeviceNormalize`` per batch) against the naive
torchvision pipeline (PIL decode, ``Resize``, ``TenCrop``, then ``ToTensor`` and ``Normalize``
per crop). Same JPEGs, one thread, interleaved rounds; prints images/s and the min and median
of the per-round ratio. The two outputs are compared on the first image (bilinear or bicubic:
within one level of 255, i.e. about 0.017 after normalisation, when the image is decoded at
full size; torch's resize rounds differently from PIL's).

    python benchmarks/tencrop.py [--images 200] [--resolution 448] [--repeats 3]
                                 [--interpolation bilinear|bicubic]
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from _common import interleaved, jpeg_benchmark_args, photo_jpegs, ratio_line, timed  # benchmarks/_common.py
from torchvision import transforms as T

from fgvc.datasets.decode import open_rgb
from fgvc.inference.tta import MultiCrop
from fgvc.transforms import DataConfig, DeviceNormalize, resize_size

BATCH = 16


def naive(resolution: int, cfg: DataConfig) -> T.Compose:
    per_crop = T.Compose([T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
    return T.Compose([T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
                      T.TenCrop(resolution),
                      T.Lambda(lambda crops: torch.stack([per_crop(c) for c in crops]))])


def run_naive(paths: list[Path], transform) -> None:
    for start in range(0, len(paths), BATCH):
        torch.stack([transform(open_rgb(p.parent, p.name)) for p in paths[start:start + BATCH]])


def run_fgvc(paths: list[Path], crops: MultiCrop, normalize: DeviceNormalize) -> None:
    for start in range(0, len(paths), BATCH):
        normalize(torch.stack([crops.load(p.parent, p.name) for p in paths[start:start + BATCH]]))


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=200, resolution=448)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = DataConfig(interpolation=args.interpolation)
    ours, theirs = MultiCrop(args.resolution, cfg, "ten_crop"), naive(args.resolution, cfg)
    normalize = DeviceNormalize(cfg)
    print(f"10-crop at {args.resolution} px ({args.interpolation}), decoding included, "
          f"{args.images} JPEGs per size, 1 thread, batches of {BATCH}, "
          f"{args.repeats} interleaved rounds after {args.warmup} untimed")
    for size in ((500, 375), (1024, 768)):
        paths = photo_jpegs(args.data, args.images, size)
        first = normalize(ours.load(paths[0].parent, paths[0].name)[None])[0]
        diff = (first - theirs(open_rgb(paths[0].parent, paths[0].name))).abs().max().item()
        seconds = interleaved({"naive": lambda p=paths: timed(lambda: run_naive(p, theirs)),
                               "fgvc": lambda p=paths: timed(lambda: run_fgvc(p, ours, normalize))},
                              args.repeats, args.warmup)
        for name, values in seconds.items():
            print(f"  {size[0]}x{size[1]} {name:6s} median {args.images / statistics.median(values):7.1f} "
                  f"images/s")
        print(f"  {size[0]}x{size[1]} largest output difference on the first image: {diff:.2e}")
        print("  " + ratio_line(f"{size[0]}x{size[1]} fgvc / naive", seconds["fgvc"], seconds["naive"]))


if __name__ == "__main__":
    main()
