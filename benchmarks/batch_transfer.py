"""Batches from the loader workers to the main process: fgvc's reused shared-memory buffers
(``fgvc/engine/shared_batches.py``) against torch's default, a new shared-memory file per batch
(the naive procedure: the same loader with a plain collate function). Same JPEGs, same train DA,
same workers and batch size; one pass per round, interleaved, after an untimed warm-up round.

Prints, per contender, the median wall time and CPU seconds of the workers and of the main
process per pass (the main process copies each batch out of its buffer, where torch's default
maps a new file instead), and the min and median per-round ratios naive / fgvc of wall time and
of the workers' CPU time.

With ``--no-decode`` the workers skip the JPEGs and hand over a new uint8 image of the same size
per sample, which isolates the transfer's own cost from the decode's noise.

    python benchmarks/batch_transfer.py [--images 1000] [--workers 1] [--batch 64] [--repeats 5]
                                        [--no-decode]
"""

from __future__ import annotations

import statistics
import time

import torch
from _common import (  # benchmarks/_common.py
    cpu_seconds,
    image_size,
    jpeg_benchmark_args,
    photo_jpegs,
    ratio_line,
)

from fgvc.datasets import load_dataset
from fgvc.datasets.images import collate_skipping_bad
from fgvc.engine.data import make_loader
from fgvc.transforms import DataConfig, loader_transform


def new_file_per_batch(batch: list):
    """``collate_skipping_bad`` under another name, so ``make_loader`` keeps torch's transfer."""
    return collate_skipping_bad(batch)


class NoDecode:
    """A transform that reads nothing: a new uint8 image per sample, as a real one returns."""

    def __init__(self, resolution: int):
        self.resolution = resolution

    def load(self, root, rel, options=None) -> torch.Tensor:
        return torch.full((3, self.resolution, self.resolution), 7, dtype=torch.uint8)


def one_pass(index, collate, args) -> tuple[float, float, float]:
    """(wall, main CPU, workers' CPU) seconds of one pass with a new loader."""
    cfg = DataConfig(interpolation=args.interpolation)
    main0, workers0 = cpu_seconds()
    start = time.perf_counter()
    transform = (NoDecode(args.resolution) if args.no_decode
                 else loader_transform("train", args.resolution, cfg))
    loader = make_loader(index, "train", transform=transform,
                         batch_size=args.batch, num_workers=args.workers, on_bad_image="fail",
                         shuffle=True, collate_fn=collate)
    for images, *_ in loader:
        assert images.dtype == torch.uint8
    del loader  # workers joined: their CPU time is counted
    wall = time.perf_counter() - start
    main1, workers1 = cpu_seconds()
    return wall, main1 - main0, workers1 - workers0


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=1000, resolution=224)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=image_size, default="500x375")
    parser.add_argument("--no-decode", action="store_true",
                        help="hand over a new image per sample without reading the JPEGs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, height = args.size
    paths = photo_jpegs(args.data, args.images, (width, height))
    index = load_dataset("imagefolder", paths[0].parents[2])
    contenders = {"torch default (new file per batch)": new_file_per_batch,
                  "fgvc reused buffers": collate_skipping_bad}
    for _ in range(args.warmup):
        for collate in contenders.values():
            one_pass(index, collate, args)
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, collate in contenders.items():
            runs[name].append(one_pass(index, collate, args))
    work = (f"{args.images} samples without decoding, {args.resolution} px" if args.no_decode
            else f"{args.images} JPEGs {width}x{height}, train DA at {args.resolution} px")
    print(f"{work}, batch {args.batch}, "
          f"{args.workers} workers, {args.repeats} interleaved rounds after {args.warmup} untimed")
    for name, values in runs.items():
        wall, main_cpu, workers_cpu = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"  {name:36s} wall {wall:6.3f} s, CPU: workers {workers_cpu:6.3f} s, "
              f"main {main_cpu:6.3f} s (medians)")
    naive, ours = runs.values()
    print("  " + ratio_line("wall, naive / fgvc", [v[0] for v in ours], [v[0] for v in naive]))
    print("  " + ratio_line("workers' CPU, naive / fgvc", [v[2] for v in ours],
                            [v[2] for v in naive]))


if __name__ == "__main__":
    main()
