"""Where a train-DA image's time goes, step by step, on one core: fgvc's fast path
(``FastTrain.load``) and timm's transform (the one ``create_loader`` builds for the same train
DA), each in full and then step by step on the same JPEGs. Explains the ratio
``benchmarks/input_pipeline.py`` prints; not itself a target.

    python benchmarks/train_transform_steps.py [--size 500x375] [--images 300] [--repeats 3]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import simplejpeg
import torch
from _common import image_size, jpeg_benchmark_args, photo_jpegs  # benchmarks/_common.py
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from fgvc.transforms import DataConfig, FastTrain, TensorColorJitter, encoded_image, resize_uint8


def per_image_ms(fn: Callable[[int], object], count: int, repeats: int) -> float:
    """Best of ``repeats`` passes over ``count`` items, in ms per item."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, (time.perf_counter() - start) / count * 1e3)
    return best


def main() -> None:
    parser = jpeg_benchmark_args(__doc__, images=300, resolution=224)
    parser.add_argument("--size", type=image_size, default="500x375")
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, height = args.size
    paths = photo_jpegs(args.data, args.images, (width, height))
    root, n, k = paths[0].parents[2], len(paths), args.resolution
    rels = [str(p.relative_to(root)) for p in paths]
    data = [p.read_bytes() for p in paths]

    from timm.data import create_transform

    timm_tf = create_transform(k, is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                               hflip=0.5, color_jitter=0.3, interpolation=args.interpolation,
                               use_prefetcher=True)
    cfg = DataConfig(interpolation=args.interpolation)
    ours = FastTrain(k, cfg)
    crop = T.RandomResizedCrop(k)
    boxes = [crop.get_params(torch.empty(0, height, width), crop.scale, crop.ratio)
             for _ in range(n)]
    encoded = [encoded_image(root, rel) for rel in rels]
    needs = [(math.ceil(k * width / w), math.ceil(k * height / h)) for _, _, h, w in boxes]
    reduced = sum(e.decode(*need, array=True).shape[1] < width
                  for e, need in zip(encoded, needs, strict=True))
    decoded = [Image.open(p).convert("RGB") for p in paths[:50]]  # the step timings reuse these
    m = len(decoded)
    arrays = [np.asarray(im).copy() for im in decoded]

    def pil_crop(i: int) -> Image.Image:
        top, left, h, w = boxes[i]
        return decoded[i % m].crop((left, top, left + w, top + h)).resize(
            (k, k), F.pil_modes_mapping[cfg.mode])

    def torch_crop(i: int) -> torch.Tensor:
        top, left, h, w = boxes[i]
        view = torch.from_numpy(arrays[i % m]).permute(2, 0, 1)[:, top:top + h, left:left + w]
        return resize_uint8(view, k, k, cfg.mode)

    crops_pil = [pil_crop(i) for i in range(m)]
    crops_torch = [torch_crop(i) for i in range(m)]
    pil_jitter, tensor_jitter = T.ColorJitter(0.3, 0.3, 0.3), TensorColorJitter(T.ColorJitter(0.3, 0.3, 0.3))
    steps = {
        "timm: whole transform (open, decode, crop, flip, jitter, array)":
            lambda i: timm_tf(Image.open(paths[i]).convert("RGB")),
        "  Pillow open + decode": lambda i: Image.open(paths[i]).convert("RGB"),
        f"  PIL crop + {args.interpolation} resize": pil_crop,
        "  PIL colour jitter (torchvision)": lambda i: pil_jitter(crops_pil[i % m]),
        "fgvc: FastTrain.load (header, decode, crop, flip, jitter)":
            lambda i: ours.load(root, rels[i]),
        "  header (EncodedImage)": lambda i: encoded_image(root, rels[i]),
        "  simplejpeg decode, exact, into an array": lambda i: simplejpeg.decode_jpeg(data[i]),
        "  the decode FastTrain asks for (reduced scale when the crop allows)":
            lambda i: encoded[i].decode(*needs[i], fast=True, array=True),
        "  torch uint8 antialiased resize of the crop": torch_crop,
        "  TensorColorJitter": lambda i: tensor_jitter(crops_torch[i % m]),
    }
    print(f"{width}x{height} JPEGs -> {k} px train DA ({args.interpolation}), {n} images, 1 thread, "
          f"best of {args.repeats} passes; {reduced} of the {n} crops allow a reduced decode")
    for name, fn in steps.items():
        print(f"  {name:70s} {per_image_ms(fn, n, args.repeats):6.3f} ms/image")


if __name__ == "__main__":
    main()
