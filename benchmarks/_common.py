"""Shared by the benchmarks: photo-like JPEGs generated once, and interleaved timing."""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def photo_jpegs(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``count`` JPEGs (quality 90) of ``size`` = (width, height) under ``root/train/c<k>/``
    (an imagefolder layout, 4 classes): smooth colour fields plus per-pixel texture, so they
    decode like photographs (pure noise would not). Generated once, then reused; one folder
    per (size, count), so an imagefolder over it holds exactly these files."""
    folder = root / f"{size[0]}x{size[1]}_{count}"
    paths = [folder / "train" / f"c{i % 4}" / f"{i:05d}.jpg" for i in range(count)]
    rng = np.random.default_rng(seed)
    width, height = size
    for path in paths:
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (height // 24 + 1, width // 24 + 1, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize(size, Image.BICUBIC), np.int16)
        texture = rng.integers(-8, 9, (height, width, 1))
        Image.fromarray((base + texture).clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def jpeg_benchmark_args(doc: str, images: int, resolution: int) -> argparse.ArgumentParser:
    """The arguments every JPEG benchmark takes: how many images per size, the output
    resolution, the resize filter, the interleaved rounds and where the generated JPEGs are
    kept."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--resolution", type=int, default=resolution)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds before the timed ones (imports, cold caches)")
    parser.add_argument("--interpolation", choices=("bilinear", "bicubic"), default="bilinear",
                        help="the resize filter of both contenders (bicubic: most ViT, "
                             "ConvNeXt and EVA weights)")
    parser.add_argument("--data", type=Path,
                        default=Path(tempfile.gettempdir()) / "fgvc-bench-jpegs")
    return parser


def image_size(text: str) -> tuple[int, int]:
    """``--size`` as WIDTHxHEIGHT, e.g. 500x375 (argparse reports a bad one in one line)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 500x375") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return width, height


def interleaved(runs: dict[str, Callable[[], float]], repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Run every contender once per round, ``repeats`` rounds; each call returns its seconds
    (or work units per second, the caller says which) and all are kept. ``warmup`` untimed
    rounds come first: the first call pays for imports and cold caches (a library imported
    inside the timed function, files read for the first time), which would count against
    whichever contender runs first. Odd rounds run the contenders in reverse order (A B, B A,
    A B, ...), so neither always runs just after the other (whose exiting workers, freed
    memory or warmed caches would otherwise always favour or burden the same one)."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    out: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats):
        order = list(runs.items())
        for name, run in order[::-1] if round_ % 2 else order:
            out[name].append(run())
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children) user + system CPU seconds so far: a loader's
    workers count once the loader has joined them."""
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def ratio_line(label: str, ours: list[float], theirs: list[float]) -> str:
    """Per-round ratio theirs/ours of seconds (so > 1 means fgvc is faster): min and median."""
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    return f"{label}: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x " \
           f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
