"""Images/s of an exported model served by onnxruntime against PyTorch eager: the same network,
the same preprocessed input batches, this CPU, the same number of threads. Networks: the
quickstart's ResNet-18 (8 classes, at its adapted 80 px), the transformer quickstart's
``vit_fgvc_tiny_convstem`` (80 px) and a standard ViT-S/16 (``vit_small_patch16_224`` at 224 px).
Weights are random (the speed does not depend on them); the ONNX file is the one ``fgvc export``
writes (``fgvc.models.export.write_onnx``, fp32, dynamic batch), served as ``fgvc predict``
serves it (``fgvc.inference.onnx_model.OnnxModel``), and its logits are compared with the
network's before timing. Interleaved rounds (``benchmarks/_common.py``); prints images/s and the
min and median of the per-round ratio onnxruntime / PyTorch (> 1: onnxruntime is faster).
Decoding and resizing are left out: both contenders would share them.

    python benchmarks/export_speed.py [--batch 32] [--batches 4] [--repeats 3] [--threads 2]
                                      [--nets resnet18 vit_fgvc_tiny_convstem vit_small_patch16_224]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, ratio_line, timed  # benchmarks/_common.py

from fgvc.inference.onnx_model import OnnxModel
from fgvc.models import create_model
from fgvc.models.config import ModelConfig
from fgvc.models.export import write_onnx

NETS = {  # name: (resolution, classes, model.img_size)
    "resnet18": (80, 8, None),
    "vit_fgvc_tiny_convstem": (80, 8, 64),
    "vit_small_patch16_224": (224, 200, None),
}


def run_all(forward, batches: list) -> None:
    for batch in batches:
        forward(batch)


def bench(name: str, args, folder: Path) -> None:
    resolution, classes, img_size = NETS[name]
    model = create_model(ModelConfig(arch=name, img_size=img_size), classes).eval()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((args.batch, 3, resolution, resolution), dtype=np.float32)
               for _ in range(args.batches)]
    tensors = [torch.from_numpy(b) for b in batches]
    path = folder / f"{name}.onnx"
    opset = write_onnx(model, path, tensors[0][:2], name)
    served = OnnxModel(path, device="cpu", threads=args.threads)

    def eager(batch: torch.Tensor) -> None:
        with torch.inference_mode():
            model(batch)

    with torch.inference_mode():
        difference = float(np.abs(served(batches[0]) - model(tensors[0]).numpy()).max())
    seconds = interleaved({"pytorch": lambda: timed(lambda: run_all(eager, tensors)),
                           "onnxruntime": lambda: timed(lambda: run_all(served, batches))},
                          args.repeats, args.warmup)
    images = args.batch * args.batches
    print(f"{name} at {resolution} px, {classes} classes, opset {opset}: max |logit "
          f"difference| {difference:.1e}")
    for contender, values in seconds.items():
        print(f"  {contender:<11} median {images / statistics.median(values):8.1f} images/s, "
              f"best {images / min(values):8.1f} images/s")
    print("  " + ratio_line(f"{name} onnxruntime / pytorch", seconds["onnxruntime"],
                            seconds["pytorch"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of both: torch.set_num_threads and onnxruntime's intra-op")
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batches of {args.batch}, {args.batches} per round, {args.threads} thread(s), "
          f"{args.repeats} interleaved rounds after {args.warmup} untimed; torch "
          f"{torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.nets:
            bench(name, args, Path(folder))


if __name__ == "__main__":
    main()
