"""Train input pipeline: fgvc's loader against timm's ``create_loader`` with the same train DA
(RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3), bilinear or bicubic, flip 0.5, colour jitter 0.3
on brightness, contrast and saturation) on the same JPEGs, the same number of workers and
batch size, both ending with a normalised float batch on the device (here the CPU: timm's
``PrefetchLoader`` and fgvc's ``DeviceNormalize`` both normalise there, inside the timing).

Interleaved rounds (timm, fgvc, timm, fgvc, ...), one full pass over the images each; prints
images/s and the min and median of the per-round ratio fgvc / timm, in wall time (the target)
and in CPU seconds of the whole pass (main process and workers), which the scheduling of three
processes on few cores moves less.

    python benchmarks/input_pipeline.py [--images 1000] [--workers 2] [--repeats 3]
                                        [--interpolation bilinear|bicubic]
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from _common import (  # benchmarks/_common.py
    cpu_seconds,
    interleaved,
    jpeg_benchmark_args,
    photo_jpegs,
    ratio_line,
    timed,
)

from fgvc.datasets import load_dataset
from fgvc.engine.data import make_loader
from fgvc.transforms import DataConfig, DeviceNormalize, loader_transform


def timm_pass(root: Path, size: int, batch: int, workers: int, interpolation: str) -> None:
    from timm.data import ImageDataset, create_loader

    loader = create_loader(
        ImageDataset(str(root)), input_size=(3, size, size), batch_size=batch,
        is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
        color_jitter=0.3, interpolation=interpolation, num_workers=workers,
        device=torch.device("cpu"), use_prefetcher=True, persistent_workers=False)
    for images, _ in loader:
        assert images.dtype == torch.float32


def fgvc_pass(root: Path, size: int, batch: int, workers: int, interpolation: str) -> None:
    index = load_dataset("imagefolder", root)
    cfg = DataConfig(interpolation=interpolation)
    loader = make_loader(index, "train", transform=loader_transform("train", size, cfg),
                         batch_size=batch, num_workers=workers, on_bad_image="fail",
                         shuffle=True, device_transform=DeviceNormalize(cfg))
    for images, *_ in loader:
        assert loader.device_transform(images).dtype == torch.float32


def measured(one_pass, args: tuple, cpu_log: list[float]) -> float:
    """Wall seconds of ``one_pass(*args)``; its CPU seconds (main process and the workers it
    joined) are appended to ``cpu_log``."""
    before = sum(cpu_seconds())
    wall = timed(lambda: one_pass(*args))
    cpu_log.append(sum(cpu_seconds()) - before)
    return wall


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=1000, resolution=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"train DA at {args.resolution} px ({args.interpolation}), batch {args.batch}, "
          f"{args.workers} workers, "
          f"{args.images} JPEGs per size, {args.repeats} interleaved rounds after "
          f"{args.warmup} untimed")
    for size in ((500, 375), (1024, 768)):
        paths = photo_jpegs(args.data, args.images, size)
        root = paths[0].parents[2]
        a = (root, args.resolution, args.batch, args.workers, args.interpolation)
        cpu: dict[str, list[float]] = {"timm": [], "fgvc": []}
        seconds = interleaved({"timm": lambda a=a, c=cpu: measured(timm_pass, a, c["timm"]),
                               "fgvc": lambda a=a, c=cpu: measured(fgvc_pass, a, c["fgvc"])},
                              args.repeats, args.warmup)
        for name, values in seconds.items():
            print(f"  {size[0]}x{size[1]} {name:5s} median {args.images / statistics.median(values):7.1f} "
                  f"images/s, {statistics.median(cpu[name][args.warmup:]):6.3f} CPU s per pass")
        label = f"{size[0]}x{size[1]} fgvc / timm"
        print("  " + ratio_line(label, seconds["fgvc"], seconds["timm"]))
        print("  " + ratio_line(label + " (CPU s)", cpu["fgvc"][args.warmup:],
                                cpu["timm"][args.warmup:]))


if __name__ == "__main__":
    main()
