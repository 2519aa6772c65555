"""Dataset metadata at iNaturalist 2021 scale: fgvc's COCO loader against a bare ``json.load``
of the same file (CPU time) and against the previous loader, taken from git (resident memory,
copy-on-write sharing).

    python benchmarks/metadata_scale.py                       # 2.7 M images, 10,000 classes
    python benchmarks/metadata_scale.py --images 540000       # a fifth of it
    python benchmarks/metadata_scale.py --profile             # where the loader's time goes

Writes an iNaturalist-2021-shaped ``train.json`` (every field of the real file: image size,
licence, rights holder, date, coordinates; annotations; categories with the taxonomy), then,
interleaved for ``--repeats`` rounds, each in a fresh subprocess: a bare ``json.load`` of it;
the current loader; the previous one (``git archive`` of ``BASELINE_COMMIT``). Reported per
subprocess: CPU time of the call (``time.process_time``; the system share, mostly page
faults of fresh memory, is printed too, and the ratio of user time alone: on a virtual machine
the kernel's cost per page fault varies several-fold between runs of the same parse), its peak
resident memory above the start (the parsed tree and the parser's own buffers), resident memory
it leaves after loading (``VmRSS`` after minus before, the parsed JSON freed), and the private
memory two forked workers gain while reading every sample (``Private_Dirty`` of
``/proc/self/smaps_rollup``, as a DataLoader worker would). One bare ``json.load`` runs first
and is not counted: on this project's virtual machine the first large process of a run paid
two to four times the CPU of the later ones (without the warm-up, the first repeat's
``json.load`` took 22 s to 37 s of CPU in three runs of 2026-12-03, the others 8.5 s to 14.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "edb7d9a"  # the last commit before the compact metadata
KINGDOMS = ["Animalia", "Plantae", "Fungi", "Chromista", "Protozoa", "Bacteria"]


def write_inat2021(path: Path, images: int, classes: int, seed: int = 0) -> None:
    """A ``train.json`` shaped like iNaturalist 2021's, written as a stream."""
    import random

    rng = random.Random(seed)
    cats = []
    for c in range(classes):
        taxa = [KINGDOMS[c % len(KINGDOMS)], f"Phylum{c % 13}", f"Class{c % 51}",
                f"Order{c % 273}", f"Family{c % 1103}", f"Genus{c % 4884}", f"epithet{c}"]
        cats.append({"id": c, "name": f"{taxa[5]} {taxa[6]}", "common_name": f"Common {c}",
                     "supercategory": taxa[0], "kingdom": taxa[0], "phylum": taxa[1],
                     "class": taxa[2], "order": taxa[3], "family": taxa[4], "genus": taxa[5],
                     "specific_epithet": taxa[6],
                     "image_dir_name": f"{c:05d}_" + "_".join(taxa)})
    with path.open("w") as f:
        f.write('{"info": {"year": 2021, "version": 2, "description": "synthetic, iNat 2021 '
                'shaped"}, "licenses": [{"id": 1, "name": "CC BY 4.0", "url": "https://x"}], '
                '"images": [')
        for i in range(images):
            c = i % classes
            f.write(("" if i == 0 else ", ") + json.dumps({
                "id": i, "width": 500, "height": 375 + i % 125,
                "file_name": f"train/{cats[c]['image_dir_name']}/{uuid.UUID(int=rng.getrandbits(128))}.jpg",
                "license": 1, "rights_holder": f"user{rng.randrange(100000)}",
                "date": f"20{10 + i % 11}-0{1 + i % 9}-1{i % 10} 12:34:56+00:00",
                "latitude": round(rng.uniform(-60, 70), 6),
                "longitude": round(rng.uniform(-180, 180), 6), "location_uncertainty": i % 1000}))
        f.write('], "categories": ' + json.dumps(cats) + ', "annotations": [')
        for i in range(images):
            f.write(("" if i == 0 else ", ")
                    + f'{{"id": {i}, "image_id": {i}, "category_id": {i % classes}}}')
        f.write("]}")


def status(field: str, source: str = "/proc/self/status") -> int:
    for line in Path(source).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in {source} (Linux only)")


def child(kind: str, root: str) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    import gc
    import time

    if kind != "json":
        from fgvc.datasets.coco import load_coco
    gc.collect()
    before = status("VmRSS")
    start = time.process_time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if kind == "json":
        with open(Path(root) / "train.json", encoding="utf-8") as f:
            result = json.load(f)
    else:
        result = load_coco("inaturalist2021", Path(root), {"train": "train.json"})
    cpu = time.process_time() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    gc.collect()
    kept = status("VmRSS") - before
    out = {"cpu": cpu, "rss": kept, "sys": after.ru_stime - usage.ru_stime,
           "user": after.ru_utime - usage.ru_utime,
           "peak": after.ru_maxrss * 1024 - before}
    if kind != "json":
        samples = result.split("train")
        out["checksum"] = sum(len(s.path) + s.label + len(s.image_id) for s in samples[::997])
        out["first"] = list(samples[0].__dict__.values()) if hasattr(samples[0], "__dict__") \
            else [samples[0].path, samples[0].label, samples[0].image_id]
        out["worker_growth"] = forked_growth(samples)
    print(json.dumps(out))


def profile(root: Path, top: int = 16) -> None:
    """cProfile of one ``load_coco`` in this process: the functions with the most own time.
    Freeing the parsed tree shows as the own time of the function whose frame held it."""
    import cProfile
    import pstats

    from fgvc.datasets.coco import load_coco

    profiler = cProfile.Profile()
    profiler.runcall(load_coco, "inaturalist2021", root, {"train": "train.json"})
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def forked_growth(samples, workers: int = 2) -> list[int]:
    """Private memory each forked worker gains while reading every sample once."""
    growth = []
    for _ in range(workers):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            start = status("Private_Dirty", "/proc/self/smaps_rollup")
            total = 0
            for i in range(len(samples)):
                s = samples[i]
                total += s.label + len(s.path)
            os.write(write, str(status("Private_Dirty", "/proc/self/smaps_rollup") - start).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as r:
            growth.append(int(r.read()))
        os.waitpid(pid, 0)
    return growth


def run(kind: str, root: Path, pythonpath: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run([sys.executable, __file__, "--child", kind, str(root)], env=env,
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> str:
    return f"min {min(values):.2f} median {statistics.median(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2_700_000)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="reuse/keep the generated file in this folder")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the comparison: where the current loader's time goes "
                             "(cProfile, one run, the functions with the most own time)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="fgvc-meta-"))
    data = Path(args.keep) if args.keep else work / "data"
    try:
        data.mkdir(parents=True, exist_ok=True)
        if not (data / "train.json").is_file():
            write_inat2021(data / "train.json", args.images, args.classes)
        old = work / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_COMMIT, "fgvc"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        if args.profile:
            profile(data)
            return
        size = (data / "train.json").stat().st_size
        print(f"iNaturalist-2021-shaped train.json: {args.images:,} images, {args.classes:,} "
              f"classes, {size / 1e9:.2f} GB; {args.repeats} interleaved repeats")
        rows: dict[str, list[dict]] = {"json": [], "new": [], "old": []}
        run("json", data, ROOT)  # warm-up, not counted: see the module's docstring
        for repeat in range(args.repeats):
            for kind, path in (("json", ROOT), ("new", ROOT), ("old", old)):
                rows[kind].append(run(kind, data, path))
            j, n, o = (rows[k][-1] for k in ("json", "new", "old"))
            assert n["checksum"] == o["checksum"] and n["first"] == o["first"], "samples differ"
            print(f"repeat {repeat + 1}: CPU json.load {j['cpu']:.2f} s, new {n['cpu']:.2f} s, "
                  f"old {o['cpu']:.2f} s; resident after loading new {n['rss'] / 1e6:.0f} MB, "
                  f"old {o['rss'] / 1e6:.0f} MB; forked workers gained new "
                  f"{[g // 2**20 for g in n['worker_growth']]} MiB, old "
                  f"{[g // 2**20 for g in o['worker_growth']]} MiB")
        print("samples: identical in old and new (checksum over every 997th sample, first sample)")
        cpu = {k: [r["cpu"] / j["cpu"] for r, j in zip(rows[k], rows["json"], strict=True)]
               for k in ("new", "old")}
        print(f"CPU time / bare json.load: new {summary(cpu['new'])}, old {summary(cpu['old'])}")
        user = {k: [r["user"] / j["user"] for r, j in zip(rows[k], rows["json"], strict=True)]
                for k in ("new", "old")}
        print(f"user CPU time only (the kernel's page-fault share left out) / bare json.load: "
              f"new {summary(user['new'])}, old {summary(user['old'])}")
        print(f"resident memory after loading, new / old: "
              f"{summary([n['rss'] / o['rss'] for n, o in zip(rows['new'], rows['old'], strict=True)])} "
              f"(new {statistics.median([r['rss'] for r in rows['new']]) / args.images:.0f} bytes "
              f"per image, old {statistics.median([r['rss'] for r in rows['old']]) / args.images:.0f})")
        growth = {k: max(g for r in rows[k] for g in r["worker_growth"]) for k in ("new", "old")}
        for kind in rows:
            print(f"{kind}: system CPU s (page faults) "
                  f"{statistics.median([r['sys'] for r in rows[kind]]):.2f} of "
                  f"{statistics.median([r['cpu'] for r in rows[kind]]):.2f}, peak resident above "
                  f"the start {statistics.median([r['peak'] for r in rows[kind]]) / 1e9:.2f} GB "
                  "(medians)")
        print(f"largest private growth of a forked worker reading every sample: new "
              f"{growth['new'] / 2**20:.1f} MiB, old {growth['old'] / 2**20:.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
