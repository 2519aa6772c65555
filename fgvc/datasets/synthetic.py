"""A procedurally generated fine-grained dataset that ships in code: fgvc's runnable default.

Every image shows one creature: an elliptical body with a head and a tail, on a cluttered
background. All classes share the coarse look: body colours come from one palette for every
class, and the eye colour and tail shape are drawn at random for every image, as distractors.
Classes differ only in fine detail: the kind of texture on the body (stripes, spots, checks,
rings) and how fine it is, which takes resolution to tell apart. Objects vary in size and
position and images in size and aspect ratio, so RandomResizedCrop at train time and a centre
crop at test time really do show objects at different apparent sizes, the discrepancy FixRes
corrects.

The dataset is a deterministic function of its options (seed included) and is written once, on
first use, under its root, in a competition layout: labelled ``train.csv`` and ``val.csv``, a
``test.csv`` without labels, and the test answers kept apart in ``solution/test_labels.csv``.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFilter

from fgvc.datasets.base import UNLABELLED, DatasetError, DatasetIndex, Sample
from fgvc.datasets.registry import register
from fgvc.io.lock import wait_for_lock
from fgvc.progress import progress

if TYPE_CHECKING:  # numpy is imported where images are drawn: `fgvc datasets list` lists
    import numpy as np  # this adapter without paying for it

log = logging.getLogger(__name__)

PATTERNS = ("stripes", "spots", "checks", "rings")
PARALLEL_FROM = 1000  # images: below this, generation stays in the calling process
DENSITIES = {"coarse": 1.0, "fine": 0.7}  # texture period, relative
EYES = ((225, 35, 35), (35, 85, 235), (245, 205, 25))
TAILS = ("fork", "fan")
BODY_PALETTE = ((150, 110, 70), (120, 130, 90), (170, 150, 120), (100, 100, 110), (160, 90, 60))
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 4
CANVAS = (160, 80)  # the creature is drawn on this canvas, then scaled and rotated


@dataclass(frozen=True)
class SyntheticOptions:
    """What the generated dataset depends on; changing any of it means another dataset."""

    seed: int = 0
    num_classes: int = 8
    train_per_class: int = 100
    val_per_class: int = 240  # 1,920 images: one standard error <= 1 point at 75 %
    test_per_class: int = 40
    min_side: int = 72
    max_side: int = 160

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> SyntheticOptions:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise DatasetError(
                f"dataset.options: unknown option(s) {', '.join(unknown)} for the synthetic "
                f"dataset (known: {', '.join(sorted(known))})"
            )
        opts = cls(**options)
        limit = len(PATTERNS) * len(DENSITIES)
        if not 2 <= opts.num_classes <= limit:
            raise DatasetError(
                f"dataset.options.num_classes: must be between 2 and {limit}, got {opts.num_classes}"
            )
        if min(opts.train_per_class, opts.val_per_class, opts.test_per_class) < 1:
            raise DatasetError("dataset.options: every *_per_class count must be >= 1")
        if not 32 <= opts.min_side <= opts.max_side:
            raise DatasetError(
                f"dataset.options: need 32 <= min_side <= max_side, got "
                f"min_side={opts.min_side}, max_side={opts.max_side}"
            )
        return opts

    def per_class(self, split: str) -> int:
        return getattr(self, f"{split}_per_class")


def class_table(num_classes: int, seed: int) -> list[tuple[str, str]]:
    """The (texture, density) of every class, a seeded choice among all combinations."""
    import numpy as np

    combos = list(itertools.product(PATTERNS, DENSITIES))
    order = np.random.default_rng(seed).permutation(len(combos))
    return [combos[i] for i in order[:num_classes]]


def category_id(label: int) -> str:
    """The dataset's own category ids start at 100, so label indices and ids never coincide."""
    return str(100 + label)


def image_id(seed: int, split: str, index: int) -> str:
    return hashlib.sha1(f"{seed}/{split}/{index}".encode()).hexdigest()[:12]


def _draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, scale: float, colour: tuple,
                  rng: np.random.Generator) -> None:
    """The texture, with every period and size multiplied by ``scale``."""
    w, h = CANVAS
    phase = int(rng.integers(0, 10))

    def size(v: float) -> int:
        return max(2, round(v * scale))

    if pattern == "stripes":
        for x in range(phase, w, size(22)):
            draw.rectangle([x, 0, x + size(9), h], fill=colour)
    elif pattern == "spots":
        step = size(20)
        for y in range(phase % 8, h, step):
            for x in range(phase + (y // step % 2) * step // 2, w, step):
                draw.ellipse([x, y, x + size(11), y + size(11)], fill=colour)
    elif pattern == "checks":
        cell = size(14)
        for y in range(0, h, cell):
            for x in range(phase + (y // cell % 2) * cell, w, 2 * cell):
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
    else:  # rings
        cx, cy = w * 0.45, h / 2
        for r in range(size(6), 60, size(13)):
            draw.ellipse([cx - r * 1.6, cy - r, cx + r * 1.6, cy + r], outline=colour,
                         width=size(5))


def draw_creature(label_traits: tuple[str, str], rng: np.random.Generator) -> Image.Image:
    """The creature on a transparent canvas, before scaling and rotation."""
    import numpy as np

    pattern, density = label_traits
    eye = EYES[int(rng.integers(len(EYES)))]
    tail = TAILS[int(rng.integers(len(TAILS)))]
    w, h = CANVAS
    body = np.array(BODY_PALETTE[int(rng.integers(len(BODY_PALETTE)))], dtype=float)
    body = np.clip(body + rng.normal(0, 12, 3), 0, 255)
    body_rgb = tuple(int(c) for c in body)
    pattern_rgb = tuple(int(c * 0.45) for c in body)

    layer = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    # Tail at the left end.
    if tail == "fork":
        draw.polygon([(34, h / 2), (4, h / 2 - 24), (14, h / 2)], fill=body_rgb)
        draw.polygon([(34, h / 2), (4, h / 2 + 24), (14, h / 2)], fill=body_rgb)
    else:
        draw.pieslice([2, h / 2 - 22, 46, h / 2 + 22], 90, 270, fill=body_rgb)
    # Body with its texture, clipped to the body ellipse.
    body_box = [26, 14, 130, h - 14]
    mask = Image.new("L", CANVAS, 0)
    ImageDraw.Draw(mask).ellipse(body_box, fill=255)
    texture = Image.new("RGBA", CANVAS, body_rgb + (255,))
    _draw_pattern(ImageDraw.Draw(texture), pattern, DENSITIES[density], pattern_rgb, rng)
    layer.paste(texture, (0, 0), mask)
    # Head and eye at the right end.
    draw.ellipse([116, h / 2 - 19, 154, h / 2 + 19], fill=body_rgb)
    draw.ellipse([132, h / 2 - 11, 148, h / 2 + 5], fill=eye)
    return layer


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    import numpy as np

    top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):  # clutter: leaves and pebbles
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(3, max(width, height) / 6)
        colour = tuple(int(c) for c in rng.uniform(50, 200, 3))
        draw.ellipse([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=colour)
    return image.filter(ImageFilter.GaussianBlur(1.0))


def render_image(traits: tuple[str, str], opts: SyntheticOptions, rng: np.random.Generator):
    """One RGB image: random size and aspect ratio, the creature at a random size and place."""
    import numpy as np

    short = int(rng.integers(opts.min_side, opts.max_side + 1))
    aspect = float(np.exp(rng.uniform(np.log(2 / 3), np.log(3 / 2))))
    width, height = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
    image = _background(width, height, rng)

    creature = draw_creature(traits, rng)
    if rng.random() < 0.5:
        creature = creature.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target_w = max(24, int(min(width, height) * rng.uniform(0.45, 0.95)))
    target_h = max(12, int(target_w * CANVAS[1] / CANVAS[0]))
    creature = creature.resize((target_w, target_h), Image.Resampling.LANCZOS)
    creature = creature.rotate(float(rng.uniform(-30, 30)), resample=Image.Resampling.BICUBIC,
                               expand=True)
    cw, ch = creature.size
    x = int(rng.integers(0, max(1, width - cw + 1))) if cw < width else (width - cw) // 2
    y = int(rng.integers(0, max(1, height - ch + 1))) if ch < height else (height - ch) // 2
    image.paste(creature, (x, y), creature)
    return image


def generate(root: Path, opts: SyntheticOptions) -> None:
    """Write the whole dataset under ``root``, atomically: a crash leaves no half dataset."""
    staging = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    traits = class_table(opts.num_classes, opts.seed)
    total = sum(opts.per_class(s) * opts.num_classes for s in SPLITS)
    rows: dict[str, list[tuple[str, str, int]]] = {s: [] for s in SPLITS}
    tasks = []
    for split_index, split in enumerate(SPLITS):
        (staging / "images" / split).mkdir(parents=True)
        for i in range(opts.per_class(split) * opts.num_classes):
            label = i % opts.num_classes
            ident = image_id(opts.seed, split, i)
            rel = f"images/{split}/{ident}.jpg"
            rows[split].append((ident, rel, label))
            tasks.append((staging / rel, traits[label], opts, (opts.seed, split_index, i)))
    # Every image has its own seeded generator, so drawing them in parallel processes gives the
    # same files as drawing them in order; small datasets (tests) stay in this process.
    workers = min(os.cpu_count() or 1, 8) if total >= PARALLEL_FROM else 1
    with progress(total=total, desc=f"generating synthetic dataset in {root}", unit="img") as bar:
        if workers == 1:
            for task in tasks:
                _render_to_file(task)
                bar.update()
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_render_to_file, tasks, chunksize=32):
                    bar.update()
    _write_csv(staging / "classes.csv", ["category_id", "name"],
               [(category_id(k), "-".join(t)) for k, t in enumerate(traits)])
    for split in ("train", "val"):
        _write_csv(staging / f"{split}.csv", ["id", "path", "category_id"],
                   sorted((i, p, category_id(k)) for i, p, k in rows[split]))
    _write_csv(staging / "test.csv", ["id", "path"], sorted((i, p) for i, p, _ in rows["test"]))
    (staging / "solution").mkdir()
    _write_csv(staging / "solution" / "test_labels.csv", ["id", "category_id"],
               sorted((i, category_id(k)) for i, _, k in rows["test"]))
    meta = {"format_version": FORMAT_VERSION, "options": asdict(opts)}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(root)


def _render_to_file(task: tuple) -> None:
    import numpy as np

    path, traits, opts, seed = task
    render_image(traits, opts, np.random.default_rng(list(seed))).save(path, quality=92)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"synthetic dataset file missing: {path} (delete {path.parent} to "
                           "regenerate it)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def stored_options(root: Path) -> dict[str, Any]:
    """The options an already generated dataset was made with, for commands that must read it
    without ever generating it (``fgvc datasets info``); the error says how to generate it."""
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(
            f"no generated synthetic dataset at {root} yet: `fgvc run quickstart` "
            "generates it on first use (under the recipe's dataset.root, datasets/synthetic)")
    return dict(json.loads(meta_path.read_text()).get("options", {}))


def ensure_generated(root: Path, opts: SyntheticOptions) -> None:
    """Generate the dataset unless it is there; concurrent first runs wait for one generator
    (a lock beside the root), and what a killed generator left half-written is removed."""
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        with wait_for_lock(root.with_name(f".{root.name}.lock")):
            for partial in root.parent.glob(f".{glob.escape(root.name)}.partial-*"):
                shutil.rmtree(partial, ignore_errors=True)  # a killed generator's
            if not meta_path.is_file():
                _generate_into(root, opts)
                return
    _check_meta(root, meta_path, opts)


def _generate_into(root: Path, opts: SyntheticOptions) -> None:
    if root.exists() and any(root.iterdir()):
        raise DatasetError(
            f"{root} exists but holds no synthetic dataset (no meta.json): point "
            "dataset.root at an empty or new folder"
        )
    if root.exists():
        root.rmdir()
    total = sum(opts.per_class(s) * opts.num_classes for s in SPLITS)
    log.info("generating the embedded synthetic dataset (%d images, once; later runs reuse "
             "it) in %s", total, root.resolve())
    generate(root, opts)


def _check_meta(root: Path, meta_path: Path, opts: SyntheticOptions) -> None:
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise DatasetError(f"{meta_path} is corrupt ({err}); delete {root} to regenerate it") \
            from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("options") != asdict(opts):
        raise DatasetError(
            f"{root} holds a synthetic dataset generated with other options "
            f"({meta.get('options')}); the recipe asks for {asdict(opts)}. Use another "
            "dataset.root or delete that folder to regenerate."
        )


@register("synthetic", "procedurally generated fine-grained creatures (runnable default)",
          num_classes=lambda options: SyntheticOptions.from_dict(options).num_classes,
          options={name: int for name in SyntheticOptions.__dataclass_fields__})
def load_synthetic(root: Path, options: dict[str, Any]) -> DatasetIndex:
    opts = SyntheticOptions.from_dict(options)
    ensure_generated(root, opts)
    classes = _read_csv(root / "classes.csv")
    label_of = {row["category_id"]: k for k, row in enumerate(classes)}
    splits = {}
    for split in ("train", "val"):
        splits[split] = [
            Sample(row["path"], label_of[row["category_id"]], row["id"])
            for row in _read_csv(root / f"{split}.csv")
        ]
    splits["test"] = [Sample(r["path"], UNLABELLED, r["id"]) for r in _read_csv(root / "test.csv")]
    return DatasetIndex(
        name="synthetic",
        root=root,
        classes=[row["name"] for row in classes],
        category_ids=[row["category_id"] for row in classes],
        splits=splits,
    )


def read_test_labels(root: Path) -> dict[str, str]:
    """The held-back answers (image id -> category id), for scoring a submission offline."""
    return {row["id"]: row["category_id"] for row in _read_csv(root / "solution" / "test_labels.csv")}
