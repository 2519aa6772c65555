"""Predictions at iNaturalist scale: fgvc's memory-mappable layout against the compressed .npz
and float64 ensembling it replaced (the previous code, taken from git, run in the same script).

    python benchmarks/predictions_scale.py                      # 50,000 images x 1,010 classes
    python benchmarks/predictions_scale.py --images 5000 --repeats 3

Per repeat, interleaved: save (the old ``np.savez_compressed``, the new directory with fsync);
load + top-5 of every image; and, each in a fresh subprocess, ensembling two saved members into
a saved result, whose peak resident memory (``VmHWM`` after the operation minus ``VmRSS``
before) is reported as a multiple of the two members' probabilities. Prints min and median of
the ratios, then a linear extrapolation to 500,000 x 10,000.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BASELINE_COMMIT = "edb7d9a"  # the last commit before the directory layout


def load_old_modules(folder: Path):
    """The previous predictions.py and ensemble.py, from git, importable side by side."""
    sources = {}
    for name in ("predictions", "ensemble"):
        text = subprocess.run(["git", "-C", str(ROOT), "show",
                               f"{BASELINE_COMMIT}:fgvc/inference/{name}.py"],
                              check=True, capture_output=True, text=True).stdout
        sources[name] = text.replace("from fgvc.inference.predictions import",
                                     "from old_predictions import")
        (folder / f"old_{name}.py").write_text(sources[name])
    sys.path.insert(0, str(folder))
    modules = []
    for name in ("predictions", "ensemble"):
        spec = importlib.util.spec_from_file_location(f"old_{name}", folder / f"old_{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def make_probs(n: int, c: int, seed: int) -> np.ndarray:
    """Softmax of scaled Gaussian logits: peaked rows, as a trained classifier gives."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, c), dtype=np.float16)
    for start in range(0, n, 4096):
        logits = rng.standard_normal((min(4096, n - start), c), dtype=np.float32) * 3
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        out[start:start + len(p)] = p / p.sum(axis=1, keepdims=True)
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak_rss() -> int:
    """Reset this process's peak resident size to the current one (Linux ``clear_refs`` 5) and
    return it. ``ru_maxrss`` cannot serve: it keeps the parent's size across fork and exec."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_bytes("VmRSS")


def child(impl: str, a: str, b: str, out: str, old_folder: str) -> None:
    """Ensemble two members into ``out`` and print the peak memory it added (bytes)."""
    if impl == "old":
        _, old_ensemble = load_old_modules(Path(old_folder))
        combine, load_members = old_ensemble.combine, old_ensemble.load_members
    else:
        from fgvc.inference.ensemble import combine, load_members
    before = reset_peak_rss()
    start = time.perf_counter()
    if impl == "old":
        combine(load_members([a, b])).save(Path(out))
    else:
        combine(load_members([a, b]), out=Path(out))
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM") - before
    print(json.dumps({"peak_bytes": peak, "seconds": seconds}))


def run_child(impl: str, a: Path, b: Path, out: Path, old_folder: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True) if out.is_file() else None
    result = subprocess.run([sys.executable, __file__, "--child", impl, str(a), str(b), str(out),
                             str(old_folder)], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def ratios(line: str, old: list[float], new: list[float], higher_is_better: bool = False) -> None:
    r = [o / n for o, n in zip(old, new, strict=True)]
    print(f"{line}: old min {min(old):.3f} median {statistics.median(old):.3f} | new min "
          f"{min(new):.3f} median {statistics.median(new):.3f} | old/new ratio min {min(r):.1f}x "
          f"median {statistics.median(r):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1010)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from fgvc.inference.predictions import Predictions

    n, c = args.images, args.classes
    work = Path(tempfile.mkdtemp(prefix="fgvc-preds-"))
    try:
        old_predictions, _ = load_old_modules(work)
        ids, classes = [f"{i:08d}" for i in range(n)], [str(j) for j in range(c)]
        probs = [make_probs(n, c, seed) for seed in (0, 1)]
        member_bytes = sum(p.nbytes for p in probs)
        print(f"{n:,} images x {c:,} classes, float16: {probs[0].nbytes / 1e6:.1f} MB per "
              f"member; {args.repeats} interleaved repeats")
        old_sv, new_sv, old_ld, new_ld, old_mem, new_mem, old_ens, new_ens = ([] for _ in range(8))
        for i, p in enumerate(probs[1:], start=1):  # the second member, on disk once
            old_predictions.Predictions(ids, classes, p, {"model": f"m{i}"}).save(work / f"old{i}.npz")
            Predictions(ids, classes, p, {"model": f"m{i}"}).save(work / f"new{i}")
        for repeat in range(args.repeats):
            old = old_predictions.Predictions(ids, classes, probs[0], {"model": "m0"})
            new = Predictions(ids, classes, probs[0], {"model": "m0"})
            old_sv.append(timed(lambda o=old: o.save(work / "old0.npz")))
            new_sv.append(timed(lambda m=new: m.save(work / "new0")))
            got: dict[str, list] = {}
            old_ld.append(timed(lambda g=got: g.update(
                old=old_predictions.Predictions.load(work / "old0.npz").top_k(5))))
            new_ld.append(timed(lambda g=got: g.update(new=Predictions.load(work / "new0").top_k(5))))
            assert got["old"] == got["new"], "top-5 differs from the previous implementation"
            o = run_child("old", work / "old0.npz", work / "old1.npz", work / "oldab.npz", work)
            m = run_child("new", work / "new0", work / "new1", work / "newab", work)
            old_mem.append(o["peak_bytes"] / member_bytes)
            new_mem.append(m["peak_bytes"] / member_bytes)
            old_ens.append(o["seconds"])
            new_ens.append(m["seconds"])
            print(f"repeat {repeat + 1}: save {old_sv[-1]:.2f} s vs {new_sv[-1]:.3f} s; load+top-5 "
                  f"{old_ld[-1]:.2f} s vs {new_ld[-1]:.2f} s; ensemble peak {old_mem[-1]:.2f}x vs "
                  f"{new_mem[-1]:.2f}x the members, {old_ens[-1]:.1f} s vs {new_ens[-1]:.1f} s")
        ens_old = old_predictions.Predictions.load(work / "oldab.npz").probs.astype(np.float32)
        ens_new = np.load(work / "newab" / "probs.npy", mmap_mode="r").astype(np.float32)
        print(f"ensemble results agree to {np.abs(ens_old - ens_new).max():.1e} (max abs difference)")
        ratios("save (s)", old_sv, new_sv)
        ratios("load + top-5 (s)", old_ld, new_ld)
        ratios("ensemble of two, wall (s)", old_ens, new_ens)
        print(f"ensemble of two, peak memory / members' size: old min {min(old_mem):.2f}x median "
              f"{statistics.median(old_mem):.2f}x | new min {min(new_mem):.2f}x median "
              f"{statistics.median(new_mem):.2f}x")
        scale = (500_000 * 10_000) / (n * c)
        big = 500_000 * 10_000 * 2
        print(f"extrapolated linearly to 500,000 x 10,000 ({big / 1e9:.1f} GB float16 per member, "
              f"x{scale:.0f} the work): save old {statistics.median(old_sv) * scale:.0f} s, new "
              f"{statistics.median(new_sv) * scale:.0f} s; ensemble of two needs old "
              f"{statistics.median(old_mem) * 2 * big / 1e9:.0f} GB, new about "
              f"{_new_peak_at_scale(statistics.median(new_mem) * member_bytes, n) / 1e9:.2f} "
              f"GB (streamed blocks; the ids are the part that grows); top-5 storage "
              f"{500_000 * 5 * 6 / 1e6:.0f} MB instead of {big / 1e9:.1f} GB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _new_peak_at_scale(measured: float, images: int) -> float:
    """The streamed ensemble holds a few blocks of fixed size whatever the class count, plus the
    ids (about 100 bytes per image as Python strings and fixed-width arrays): only that grows."""
    return measured + (500_000 - images) * 100


if __name__ == "__main__":
    main()
