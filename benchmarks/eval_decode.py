"""Test DA's JPEG decode: ``dataset.test_decode: exact`` (the default, the full image resized as
the reference transform does) against ``reduced`` (libjpeg-turbo's scaled decode when the file
is at least twice the resize size), what the reduced decode saves and what it changes.

For each image size: images/s of ``FastTest.load`` (decode, resize, centre crop; one thread,
interleaved rounds, min and median of the per-round ratio reduced / exact), and each mode's
difference from the reference transform (PIL decode and resize) in grey levels, the mean over
the images' pixels and the largest, on photo-like JPEGs and on fine textures (per-pixel noise
and fine stripes, the worst case for a different low-pass filter).

    python benchmarks/eval_decode.py [--images 100] [--resolution 224] [--repeats 3]
                                     [--interpolation bilinear|bicubic]
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, jpeg_benchmark_args, photo_jpegs, ratio_line, timed  # benchmarks/_common.py
from PIL import Image

from fgvc.datasets.decode import DecodeOptions, open_rgb
from fgvc.transforms import DataConfig, FastTest, build_transform, resize_size

MODES = {"exact": DecodeOptions(), "reduced": DecodeOptions(test_decode="reduced")}


def texture_jpegs(root: Path, kind: str, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` JPEGs (quality 92) of per-pixel noise or fine diagonal stripes."""
    folder = root / f"{kind}_{size[0]}x{size[1]}_{count}"
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        if kind == "noise":
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        else:
            x, y = np.arange(width)[None, :, None], np.arange(height)[:, None, None]
            phase = rng.uniform(0, 2 * np.pi)
            wave = 127.5 + 127.5 * np.sin(2 * np.pi * (0.37 * x + 0.11 * y) + phase)
            pixels = wave.repeat(3, 2).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=92)
    return paths


def difference(paths: list[Path], resolution: int, cfg: DataConfig,
               options: DecodeOptions) -> tuple[float, float]:
    """Mean and largest |fast path - reference| in grey levels over the images."""
    reference, fast = build_transform("test", resolution, cfg), FastTest(resolution, cfg)
    means, largest = [], 0.0
    for path in paths:
        ref = reference(open_rgb(path.parent, path.name)) * 255
        diff = (fast.load(path.parent, path.name, options).float() - ref).abs()
        means.append(float(diff.mean()))
        largest = max(largest, float(diff.max()))
    return statistics.fmean(means), largest


def run(paths: list[Path], fast: FastTest, options: DecodeOptions) -> None:
    for path in paths:
        fast.load(path.parent, path.name, options)


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=100, resolution=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = DataConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation=args.interpolation)
    short = resize_size(args.resolution, cfg.crop_pct)
    fast = FastTest(args.resolution, cfg)
    print(f"test DA at {args.resolution} px (resize to {short}, {args.interpolation}), "
          f"{args.images} JPEGs per size, 1 thread, {args.repeats} interleaved rounds after "
          f"{args.warmup} untimed")
    sets = [(f"photo {w}x{h}", photo_jpegs(args.data, args.images, (w, h)))
            for w, h in ((500, 375), (1024, 768), (2048, 1536))]
    sets += [(f"{kind} {f}x ({f * short * 4 // 3}x{f * short})",
              texture_jpegs(args.data, kind, max(args.images // 10, 2),
                            (f * short * 4 // 3, f * short)))
             for kind in ("noise", "stripes") for f in (2, 4)]
    for label, paths in sets:
        for mode, options in MODES.items():
            mean, largest = difference(paths[:10], args.resolution, cfg, options)
            print(f"  {label:28s} {mode:7s} vs reference: mean {mean:5.2f}, "
                  f"max {largest:5.1f} grey levels")
        if not label.startswith("photo"):
            continue
        seconds = interleaved(
            {mode: lambda o=options, p=paths: timed(lambda: run(p, fast, o))
             for mode, options in MODES.items()}, args.repeats, args.warmup)
        for mode, values in seconds.items():
            print(f"  {label:28s} {mode:7s} median {len(paths) / statistics.median(values):7.1f} "
                  f"images/s")
        print("  " + ratio_line(f"{label} reduced / exact", seconds["reduced"], seconds["exact"]))


if __name__ == "__main__":
    main()
