"""How long `fgvc datasets info` takes on a CUB-200-2011-sized copy, and that it loads no torch.

Builds CUB_200_2011's id lists for 11,788 images (200 classes) with empty image files (``info``
reads metadata and checks that files exist; it decodes nothing), then runs
``python -m fgvc datasets info cub200 --root ...`` as a fresh process several
times, interleaved with a bare ``python -c pass`` (the interpreter's own start-up), and prints
min and median wall and CPU times (CPU time is what a loaded machine does not inflate). Exit
status 1 if torch was imported (checked with ``-X importtime``).

    python benchmarks/datasets_info.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CUB_IMAGES, CUB_CLASSES = 11_788, 200


def write_cub_sized(root: Path) -> None:
    base = root / "CUB_200_2011"
    lines: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    for i in range(1, CUB_IMAGES + 1):
        c = (i - 1) % CUB_CLASSES + 1
        rel = f"{c:03d}.Species_{c}/Species_{c}_{i:05d}.jpg"
        (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "images" / rel).touch()
        lines["images"].append(f"{i} {rel}")
        lines["labels"].append(f"{i} {c}")
        lines["split"].append(f"{i} {int(i % 2 == 0)}")
        lines["boxes"].append(f"{i} 1.0 2.0 30.0 40.0")
    for key, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                      ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (base / file).write_text("\n".join(lines[key]) + "\n")
    (base / "classes.txt").write_text(
        "".join(f"{c} {c:03d}.Species_{c}\n" for c in range(1, CUB_CLASSES + 1)))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) of the child, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr + done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    # Byte-code caching on, as in an ordinary install (some shells set PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        write_cub_sized(Path(tmp))
        info = [sys.executable, "-m", "fgvc", "datasets", "info", "cub200", "--root", tmp]
        bare = [sys.executable, "-c", "pass"]
        _, _, imports = timed([sys.executable, "-X", "importtime", *info[1:]], env)  # also warms up
        torch_loaded = any(line.rstrip().endswith("| torch") for line in imports.splitlines())
        runs: dict[str, list[tuple[float, float]]] = {"info": [], "bare": []}
        for _ in range(args.repeats):
            runs["info"].append(timed(info, env)[:2])
            runs["bare"].append(timed(bare, env)[:2])
        for name, key in (("fgvc datasets info cub200 (11,788 images)", "info"),
                          ("python -c pass (interpreter start-up)", "bare")):
            walls, cpus = zip(*runs[key], strict=True)
            print(f"{name}: wall min {min(walls):.3f} s, median {statistics.median(walls):.3f} s; "
                  f"CPU min {min(cpus):.3f} s, median {statistics.median(cpus):.3f} s "
                  f"({len(walls)} runs)")
        print(f"load average during the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"torch imported: {'yes' if torch_loaded else 'no'}")
    return 1 if torch_loaded else 0


if __name__ == "__main__":
    raise SystemExit(main())
