"""Stage 2 (FixRes adaptation of the classifier and the last BN, test DA): 10 epochs on cached
activations (fgvc's default) against the per-epoch procedure (``adapt_cache_gb: 0``: every
epoch decodes and runs the whole network) and against one plain inference pass over the same
images (the train and validation splits the stage reads). The adapt stage validates after
every epoch in both procedures. Interleaved rounds; prints seconds, the ratio cached / one
inference pass (the target is <= 2) and the speed-up over the per-epoch procedure, min and
median over the rounds. Results equal to float tolerance: see tests/test_feature_cache.py.

    python benchmarks/stage2.py [--arch resnet18] [--resolution 112] [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import torch
from _common import interleaved, timed  # benchmarks/_common.py

from fgvc.datasets import load_dataset
from fgvc.engine.context import RunContext
from fgvc.engine.loop import evaluate
from fgvc.engine.stage import run_stage
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import parse_recipe


def recipe(args, root: Path, out: Path, cache_gb: float):
    return parse_recipe({
        "name": "stage2", "device": "cpu", "output_root": str(out),
        "dataset": {"name": "synthetic", "root": str(root), "num_workers": args.workers,
                    "options": {"num_classes": 8, "train_per_class": args.per_class,
                                "val_per_class": max(1, args.per_class // 4),
                                "test_per_class": 1, "seed": 1}},
        "model": {"arch": args.arch},
        "stages": [{"name": "adapt", "resolution": args.resolution, "epochs": args.epochs,
                    "batch_size": 32, "trainable": ["classifier", "last_bn"],
                    "optimizer": {"lr": 0.01}, "schedule": {"name": "constant"},
                    "bn_momentum": None, "adapt_cache_gb": cache_gb}],
        "evaluate": {"batch_size": 64},
    })


def context(args, root: Path, out: Path, cache_gb: float) -> RunContext:
    r = recipe(args, root, out, cache_gb)
    index = load_dataset("synthetic", root, r.dataset.options)
    torch.manual_seed(0)
    model = create_model(r.model, index.num_classes)
    run_dir = Path(tempfile.mkdtemp(dir=out))
    return RunContext(r, run_dir, index, model, data_config(model, r.model), torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="fgvc-stage2-"))
    root = out / "data"
    ctx = context(args, root, out, 0)
    splits = [ctx.recipe.dataset.train_split, ctx.recipe.dataset.val_split]
    images = sum(len(ctx.index.split(s)) for s in splits)

    def inference() -> float:
        c = context(args, root, out, 0)
        return timed(lambda: [evaluate(c.model, c.eval_loader(s, args.resolution, 64), c.device)
                              for s in splits])

    def adapt(cache_gb: float) -> float:
        c = context(args, root, out, cache_gb)
        return timed(lambda: run_stage(c, c.recipe.stages[0]))

    seconds = interleaved({"inference": inference, "per-epoch": lambda: adapt(0),
                           "cached": lambda: adapt(4.0)}, args.repeats)
    print(f"{args.arch} at {args.resolution} px, {images} images (train + val), "
          f"{args.epochs} adapt epochs, {args.workers} workers, {args.repeats} interleaved rounds "
          "after one untimed")
    for name, values in seconds.items():
        print(f"  {name:10s} median {statistics.median(values):7.2f} s  "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")
    for label, num, den in (("cached epochs / one inference pass", "cached", "inference"),
                            ("per-epoch / cached (speed-up)", "per-epoch", "cached")):
        ratios = [a / b for a, b in zip(seconds[num], seconds[den], strict=True)]
        print(f"  {label}: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
