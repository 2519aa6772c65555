"""The quickstart before and after the speed work, side by side: the base commit (by default
``git merge-base HEAD main``; 191785e is the commit before issue 12's work) is checked out in a
temporary ``git worktree`` and both trees run the quickstart in alternation (old, new, old, new,
...) on one dataset generated beforehand (so generation is not timed), each into its own output
folder. Prints each run's wall time, CPU time (user + system, its workers included) and the
host's steal share meanwhile, the min and median of the per-round ratios new / old of wall and
of CPU time (the target is <= 0.75; on a virtual machine whose host takes a varying share of the
CPU, the CPU-time ratio is the steadier one), and the evaluation figures of both, with their
differences.

    python benchmarks/quickstart_speed.py [--repeats 3] [--base COMMIT] [--recipe-from base]
        [--set key=value ...] [--new-set key=value ...]

``--recipe-from``: ``own`` (default) runs each tree's own ``recipes/quickstart.yaml``, ``base``
runs the base commit's file in both trees (the same work: the same splits, epochs, validation
and evaluation), ``head`` this tree's file in both. ``--set`` is passed to both runs (e.g.
``--set stages.train.epochs=4`` for a shorter check, ``--set dataset.options.val_per_class=40``
for the split the base commit generated); ``--new-set`` to the new tree only (e.g.
``--new-set precision=bf16``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from timed import cpu_ticks  # benchmarks/timed.py

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Timing:
    wall: float    # seconds
    cpu: float     # user + system seconds of the run's processes (workers included)
    steal: float   # share of the machine's CPU time the hypervisor took meanwhile


def run(tree: Path, recipe: Path, out: Path, data: Path, overrides: list[str]) -> Timing:
    cmd = [sys.executable, "-m", "fgvc", "run", str(recipe), "--force",
           "--set", f"output_root={out}", "--set", f"dataset.root={data}",
           "--set", f"submission.path={out / 'submission.csv'}"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(tree))
    before, ticks = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_ticks()
    start = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after, ticks_after = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_ticks()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    steal = (ticks_after[1] - ticks[1]) / max(ticks_after[0] - ticks[0], 1)
    return Timing(wall, cpu, steal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--new-set", dest="new_overrides", action="append", default=[])
    parser.add_argument("--recipe-from", choices=("own", "base", "head"), default="own")
    args = parser.parse_args()
    base = args.base or git("merge-base", "HEAD", "main")
    work = Path(tempfile.mkdtemp(prefix="fgvc-quickstart-speed-"))
    old_tree = work / "old"
    git("worktree", "add", "--detach", str(old_tree), base)
    try:
        recipes = {"old": old_tree / "recipes/quickstart.yaml",
                   "new": REPO / "recipes/quickstart.yaml"}
        if args.recipe_from != "own":
            shared = recipes["old" if args.recipe_from == "base" else "new"]
            recipes = {"old": shared, "new": shared}
        options = (yaml.safe_load(recipes["new"].read_text())["dataset"].get("options") or {})
        for item in args.overrides + args.new_overrides:
            key, _, value = item.partition("=")
            if key.startswith("dataset.options."):
                options[key.removeprefix("dataset.options.")] = yaml.safe_load(value)
        data = work / "data"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", "import json, sys; from fgvc.datasets import "
                        "load_dataset; load_dataset('synthetic', sys.argv[1], "
                        "json.loads(sys.argv[2]))", str(data), json.dumps(options)],
                       cwd=REPO, env=env, check=True)
        trees = {"old": old_tree, "new": REPO}
        timings: dict[str, list[Timing]] = {"old": [], "new": []}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                extra = args.new_overrides if name == "new" else []
                timings[name].append(run(tree, recipes[name], work / name, data,
                                         args.overrides + extra))
        print(f"quickstart, base {base[:10]} (old) vs {git('rev-parse', '--short', 'HEAD')} "
              f"(new, with uncommitted changes: {bool(git('status', '--porcelain', '--', 'fgvc'))}"
              f"), {args.repeats} interleaved rounds, recipe: {args.recipe_from}, overrides: "
              f"{args.overrides or 'none'}, new only: {args.new_overrides or 'none'}")
        for name, values in timings.items():
            print(f"  {name}: median wall {statistics.median(t.wall for t in values):6.1f} s, "
                  f"CPU {statistics.median(t.cpu for t in values):6.1f} s (rounds: "
                  + ", ".join(f"{t.wall:.1f} s wall / {t.cpu:.1f} s CPU / {100 * t.steal:.0f} % "
                              "steal" for t in values) + ")")
        # The host's steal slows wall time without showing in CPU time: both ratios are printed.
        for label, key in (("wall time", "wall"), ("CPU time", "cpu")):
            ratios = [getattr(n, key) / getattr(o, key)
                      for n, o in zip(timings["new"], timings["old"], strict=True)]
            print(f"  new / old {label}: min {min(ratios):.2f}, median "
                  f"{statistics.median(ratios):.2f}")
        figures = {name: json.loads((work / name / "quickstart" / "evaluation.json").read_text())
                   for name in trees}
        print("  top-1 % (old -> new):")
        for phase, rows in figures["old"].items():
            for res, metrics in rows.items():
                new = figures["new"][phase][res]["top1"]
                print(f"    {phase:18s} @{res:>4s}: {metrics['top1']:5.1f} -> {new:5.1f}"
                      f"  ({new - metrics['top1']:+.1f})")
    finally:
        git("worktree", "remove", "--force", str(old_tree))


if __name__ == "__main__":
    main()
