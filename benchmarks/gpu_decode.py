"""Issue 12 item 1's remaining candidate, measured before it is built into fgvc's loader: decode
the JPEGs on the GPU. The DataLoader workers only read each file's bytes and draw its crop
(RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3), flip 0.5, jitter 0.3 on brightness,
contrast and saturation, as ``input_pipeline.py``); the batch is decoded by nvJPEG through
``torchvision.io.decode_jpeg(list, device="cuda")`` (torchvision's batched API), then cropped,
resized (bilinear, antialiased), flipped, jittered and normalised on the GPU. Against timm's
``create_loader`` (decode and augment in the workers, normalise on the GPU), the same JPEGs,
workers and batch size; interleaved rounds, images/s and the min / median ratio.

    python benchmarks/gpu_decode.py [--images 1000] [--workers 16] [--repeats 3] [--device cuda]

``--device cpu`` runs the same code on the CPU (a correctness check of the script, not a
figure: the point is to take the decode off the CPU).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import interleaved, jpeg_benchmark_args, photo_jpegs, ratio_line, timed  # benchmarks/_common.py
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


class EncodedWithCrop(Dataset):
    """(file bytes, (top, left, h, w), flip, jitter factors): no pixel is touched here."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.crop = T.RandomResizedCrop(224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        with Image.open(path) as image:  # the header only
            width, height = image.size
        params = self.crop.get_params(torch.empty(0, height, width), self.crop.scale,
                                      self.crop.ratio)
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        jitter = torch.empty(3).uniform_(0.7, 1.3)
        return data, torch.tensor(params), torch.rand(()) < 0.5, jitter


def collate(items):
    data, params, flips, jitter = zip(*items, strict=True)
    return list(data), torch.stack(params), torch.stack(flips), torch.stack(jitter)


def augment_on_device(data: list[torch.Tensor], params: torch.Tensor, flips: torch.Tensor,
                      jitter: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    out = torch.empty(len(images), 3, size, size, device=device)
    for i, (image, (top, left, h, w)) in enumerate(zip(images, params.tolist(), strict=True)):
        crop = image[:, top:top + h, left:left + w].unsqueeze(0).float()
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    flips, jitter = flips.to(device), jitter.to(device)
    out = torch.where(flips.view(-1, 1, 1, 1), out.flip(-1), out)
    brightness, contrast, saturation = (jitter[:, k].view(-1, 1, 1, 1) for k in range(3))
    weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)

    def grey(x: torch.Tensor) -> torch.Tensor:  # ITU-R 601 luma, as PIL's "L" conversion
        return (x * weights).sum(1, keepdim=True)

    out = (out * brightness).clamp_(0, 255)
    out = (grey(out).mean((2, 3), keepdim=True) * (1 - contrast) + out * contrast).clamp_(0, 255)
    out = (grey(out) * (1 - saturation) + out * saturation).clamp_(0, 255)
    return (out - MEAN.to(device)) / STD.to(device)


def gpu_decode_pass(paths: list[Path], size: int, batch: int, workers: int,
                    device: torch.device) -> None:
    loader = DataLoader(EncodedWithCrop(paths), batch_size=batch, shuffle=True,
                        num_workers=workers, collate_fn=collate, persistent_workers=False)
    for data, params, flips, jitter in loader:
        images = augment_on_device(data, params, flips, jitter, size, device)
        assert images.shape == (len(data), 3, size, size)
    if device.type == "cuda":
        torch.cuda.synchronize()


def timm_pass(root: Path, size: int, batch: int, workers: int, device: torch.device) -> None:
    from timm.data import ImageDataset, create_loader

    loader = create_loader(
        ImageDataset(str(root)), input_size=(3, size, size), batch_size=batch,
        is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
        color_jitter=0.3, interpolation="bilinear", num_workers=workers, device=device,
        use_prefetcher=True, persistent_workers=False)
    for images, _ in loader:
        assert images.dtype == torch.float32
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=1000, resolution=224)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"GPU decode candidate vs timm, train DA at {args.resolution} px, batch {args.batch}, "
          f"{args.workers} workers, {args.images} JPEGs per size, {args.repeats} rounds after "
          f"{args.warmup} untimed, "
          f"device {device}")
    for size in ((500, 375), (1024, 768)):
        paths = photo_jpegs(args.data, args.images, size)
        root = paths[0].parents[2]
        common = (args.resolution, args.batch, args.workers, device)
        seconds = interleaved({
            "timm": lambda r=root, c=common: timed(lambda: timm_pass(r, *c)),
            "nvjpeg": lambda p=paths, c=common: timed(lambda: gpu_decode_pass(p, *c))},
            args.repeats, args.warmup)
        for name, values in seconds.items():
            print(f"  {size[0]}x{size[1]} {name:6s} median "
                  f"{args.images / statistics.median(values):7.1f} images/s")
        print("  " + ratio_line(f"{size[0]}x{size[1]} gpu-decode / timm", seconds["nvjpeg"],
                                seconds["timm"]))


if __name__ == "__main__":
    main()
