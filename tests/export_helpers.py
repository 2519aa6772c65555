"""What the export tests share: a shipped recipe shrunk and run on the tiny synthetic dataset,
a folder of user images, and the checks of a one-line refusal that leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from fgvc.cli import main

TRAIN_K, ADAPT_K = 32, 48
SHRINK = [f"stages.train.resolution={TRAIN_K}", f"stages.adapt.resolution={ADAPT_K}",
          "stages.train.epochs=1", "stages.adapt.epochs=1",
          f"evaluate.resolutions=[{TRAIN_K}, {ADAPT_K}]", "dataset.num_workers=0"]
BAD_IMAGE = "zz_bad.jpg"


def shrunk_run(recipe: str, data_root: Path, out: Path, extra: list[str] = ()) -> Path:
    """A shipped recipe, shrunk to the tiny synthetic dataset (one epoch per stage, 32 px
    adapted at 48 px), run to the end through the command line."""
    sets = [f"dataset.root={data_root}",
            "dataset.options={num_classes: 4, train_per_class: 6, val_per_class: 3, "
            "test_per_class: 3, min_side: 40, max_side: 64, seed: 3}",
            *SHRINK, *extra, f"output_root={out / 'runs'}", f"submission.path={out / 'sub.csv'}"]
    assert main(["run", recipe, *[a for s in sets for a in ("--set", s)]]) == 0
    return out / "runs" / Path(recipe).stem


def make_photos(data_root: Path, folder: Path) -> Path:
    """Five test images of several sizes (JPEG, PNG, greyscale) and one corrupt file."""
    sources = sorted((data_root / "images" / "test").glob("*.jpg"))[:4]
    for i, path in enumerate(sources):
        image = Image.open(path).convert("RGB")
        image.save(folder / (f"p{i}.png" if i % 2 else f"p{i}.jpg"))
    Image.open(sources[0]).convert("L").resize((70, 41)).save(folder / "wide_grey.png")
    (folder / BAD_IMAGE).write_bytes(b"not a JPEG")
    return folder


def readable(photos: Path) -> list[Path]:
    return sorted(p for p in photos.iterdir() if p.name != BAD_IMAGE)


def leftovers(folder: Path) -> list[str]:
    """Temporary or set-aside folders an interrupted export would leave."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err
