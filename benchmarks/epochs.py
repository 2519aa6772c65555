"""A stage's training epochs through fgvc's loader, one loader whose workers are kept across
epochs (``EpochBatches.set_epoch``), against a new loader and new workers for every epoch (what
fgvc did before; ``tests/test_loaders.py`` checks both give the same batches). Train DA at 224
px on the same JPEGs, the same workers and batch size, each batch normalised as the loop does.

Interleaved rounds of ``--epochs`` epochs each; prints seconds per round and the min and median
per-round ratio. The saving is the workers' start-up per epoch, so it is largest on small
datasets (fine-grained training sets have 1,000-6,000 images) and with many workers.

    python benchmarks/epochs.py [--images 1000] [--epochs 5] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import statistics

import torch
from _common import interleaved, jpeg_benchmark_args, photo_jpegs, ratio_line, timed  # benchmarks/_common.py

from fgvc.datasets import load_dataset
from fgvc.engine.data import make_loader
from fgvc.transforms import DataConfig, DeviceNormalize, loader_transform


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=1000, resolution=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = DataConfig(interpolation=args.interpolation)
    paths = photo_jpegs(args.data, args.images, (500, 375))
    index = load_dataset("imagefolder", paths[0].parents[2])

    def loader(epoch: int, persistent: bool):
        return make_loader(index, "train", transform=loader_transform("train", args.resolution, cfg),
                           batch_size=args.batch, num_workers=args.workers, on_bad_image="fail",
                           shuffle=True, epoch=epoch, drop_last=True, persistent=persistent,
                           device_transform=DeviceNormalize(cfg))

    def run(batches) -> None:
        for images, *_ in batches:
            batches.device_transform(images)

    def new_per_epoch() -> None:
        for epoch in range(args.epochs):
            run(loader(epoch, persistent=False))

    def kept() -> None:
        one = loader(0, persistent=True)
        for epoch in range(args.epochs):
            one.epochs.set_epoch(epoch)
            run(one)

    print(f"{args.epochs} epochs of {args.images} JPEGs 500x375, train DA at {args.resolution} px, "
          f"batch {args.batch}, {args.workers} workers, {args.repeats} interleaved rounds after "
          f"{args.warmup} untimed")
    seconds = interleaved({"new loader per epoch": lambda: timed(new_per_epoch),
                           "kept workers": lambda: timed(kept)}, args.repeats, args.warmup)
    for name, values in seconds.items():
        print(f"  {name:20s} median {statistics.median(values):6.2f} s  "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")
    print("  " + ratio_line("kept workers, speed-up over a new loader per epoch",
                            seconds["kept workers"], seconds["new loader per epoch"]))


if __name__ == "__main__":
    main()
