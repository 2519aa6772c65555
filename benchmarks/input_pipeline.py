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
                                        [--interpolation bilinear|bicubic] [--albumentations]

``--albumentations``: the row of a typical Kaggle albumentations pipeline (HorizontalFlip,
ShiftScaleRotate, HueSaturationValue, CoarseDropout) instead: a recipe's ``albumentations``
block in fgvc's loader (after fgvc's train DA, as ``position: after_crop`` runs it) against the
way competition notebooks run it, a plain ``Dataset`` (``cv2.imread``, then ``A.Compose`` of
RandomResizedCrop, the same four transforms, ``Normalize`` and ``ToTensorV2``) in a plain
shuffled ``DataLoader``. fgvc's side also runs its own flip and colour jitter.
"""

from __future__ import annotations

import functools
import statistics
import warnings
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
from torch.utils.data import DataLoader, Dataset

from fgvc.datasets import load_dataset
from fgvc.engine.data import make_loader
from fgvc.transforms import DataConfig, DeviceNormalize, albumentations_step, loader_transform


def timm_pass(root: Path, size: int, batch: int, workers: int, interpolation: str) -> None:
    from timm.data import ImageDataset, create_loader

    loader = create_loader(
        ImageDataset(str(root)), input_size=(3, size, size), batch_size=batch,
        is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
        color_jitter=0.3, interpolation=interpolation, num_workers=workers,
        device=torch.device("cpu"), use_prefetcher=True, persistent_workers=False)
    for images, _ in loader:
        assert images.dtype == torch.float32


def kaggle_transforms() -> list:
    """The augmentations of a typical Kaggle image-classification notebook."""
    import albumentations as A

    with warnings.catch_warnings():  # ShiftScaleRotate: "use Affine", as notebooks still don't
        warnings.simplefilter("ignore")
        return [A.HorizontalFlip(p=0.5),
                A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=15, p=0.5),
                A.HueSaturationValue(p=0.5),
                A.CoarseDropout(num_holes_range=(1, 8), hole_height_range=(0.05, 0.1),
                                hole_width_range=(0.05, 0.1), p=0.5)]


class NotebookDataset(Dataset):
    """A competition notebook's dataset: OpenCV decode, the whole albumentations pipeline."""

    def __init__(self, root: Path, transform):
        self.paths = sorted(root.glob("train/*/*.jpg"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import cv2

        image = cv2.cvtColor(cv2.imread(str(self.paths[i])), cv2.COLOR_BGR2RGB)
        return self.transform(image=image)["image"], int(self.paths[i].parent.name[1:])


def notebook_pass(root: Path, size: int, batch: int, workers: int, interpolation: str) -> None:
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    resize = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[interpolation]
    transform = A.Compose([A.RandomResizedCrop((size, size), scale=(0.08, 1.0),
                                               interpolation=resize),
                           *kaggle_transforms(), A.Normalize(), ToTensorV2()])
    loader = DataLoader(NotebookDataset(root, transform), batch_size=batch, shuffle=True,
                        num_workers=workers)
    for images, _ in loader:
        assert images.dtype == torch.float32


def fgvc_pass(root: Path, size: int, batch: int, workers: int, interpolation: str,
              albumentations: bool = False) -> None:
    index = load_dataset("imagefolder", root)
    cfg = DataConfig(interpolation=interpolation)
    step = None
    if albumentations:
        import albumentations as A

        step = albumentations_step(A.to_dict(A.Compose(kaggle_transforms())), "after_crop", size)
    loader = make_loader(index, "train", transform=loader_transform("train", size, cfg,
                                                                    albumentations=step),
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
    parser.add_argument("--albumentations", action="store_true",
                        help="the Kaggle albumentations row: fgvc against a notebook's loader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    other, other_pass, ours = (("notebook", notebook_pass, "fgvc+A") if args.albumentations
                               else ("timm", timm_pass, "fgvc"))
    fgvc_side = functools.partial(fgvc_pass, albumentations=args.albumentations)
    print(f"train DA at {args.resolution} px ({args.interpolation}), batch {args.batch}, "
          f"{args.workers} workers, "
          f"{args.images} JPEGs per size, {args.repeats} interleaved rounds after "
          f"{args.warmup} untimed")
    for size in ((500, 375), (1024, 768)):
        paths = photo_jpegs(args.data, args.images, size)
        root = paths[0].parents[2]
        a = (root, args.resolution, args.batch, args.workers, args.interpolation)
        cpu: dict[str, list[float]] = {other: [], ours: []}
        seconds = interleaved({other: lambda a=a, c=cpu: measured(other_pass, a, c[other]),
                               ours: lambda a=a, c=cpu: measured(fgvc_side, a, c[ours])},
                              args.repeats, args.warmup)
        for name, values in seconds.items():
            print(f"  {size[0]}x{size[1]} {name:8s} median "
                  f"{args.images / statistics.median(values):7.1f} "
                  f"images/s, {statistics.median(cpu[name][args.warmup:]):6.3f} CPU s per pass")
        label = f"{size[0]}x{size[1]} {ours} / {other}"
        print("  " + ratio_line(label, seconds[ours], seconds[other]))
        print("  " + ratio_line(label + " (CPU s)", cpu[ours][args.warmup:],
                                cpu[other][args.warmup:]))


if __name__ == "__main__":
    main()
