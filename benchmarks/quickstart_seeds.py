"""Run a recipe for several seeds and print mean ± sd of each accuracy cell, as Markdown.

One seed's figures move by a few points on a small validation split; this says by how much.
Each seed is an ordinary run ``<out>/<name>-seed<N>/`` (a finished one is reused, an
interrupted one resumed); the dataset is the same for every seed (``dataset.options.seed`` is
not touched), only training draws change.

    python benchmarks/quickstart_seeds.py                       # quickstart, seeds 0 1 2
    python benchmarks/quickstart_seeds.py recipes/quickstart.yaml --seeds 0 1 2 3 4 \\
        --out runs/seeds --set stages.adapt.method=bn_stats

The table (also written to ``<out>/seeds.md``) is ready to paste into the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_seed(recipe_path: str, seed: int, out: Path, overrides: list[str]) -> tuple[Path, float]:
    from fgvc.recipes.recipe import load_recipe
    from fgvc.workflows.pipeline import run_recipe

    base = load_recipe(recipe_path, overrides)
    name = f"{base.name}-seed{seed}"
    sets = list(overrides) + [f"seed={seed}", f"name={name}", f"output_root={out}",
                              "predict=null", "submission=null"]
    recipe = load_recipe(recipe_path, sets)
    start = time.perf_counter()
    if (recipe.run_dir / "summary.json").exists():
        return recipe.run_dir, 0.0
    run_dir = run_recipe(recipe, resume=recipe.run_dir.exists())
    return run_dir, time.perf_counter() - start


def run_seeds(args: argparse.Namespace, out: Path) -> tuple[dict, dict]:
    """Every seed's (run folder, seconds), here one after the other or with ``--executor`` one
    job per seed; and each failed seed's one-line reason."""
    if not args.executor:
        return {s: run_seed(args.recipe, s, out, args.overrides) for s in args.seeds}, {}
    from fgvc.cli import job_resources
    from fgvc.workflows.fanout import Task, run_tasks

    recipe = str(Path(args.recipe).absolute()) if Path(args.recipe).is_file() else args.recipe
    tasks = [Task(str(s), run_seed, (recipe, s, out.absolute(), args.overrides))
             for s in args.seeds]
    gathered = run_tasks(tasks, job_resources(args), "seeds", out)
    return ({s: gathered.results[str(s)] for s in args.seeds if str(s) in gathered.results},
            {s: gathered.failed[str(s)] for s in args.seeds if str(s) in gathered.failed})


def cell(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else ""
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(evaluations: list[dict], seeds: list[int], command: str) -> str:
    phases = [p for p in ("before_adaptation", "after_adaptation") if p in evaluations[0]]
    resolutions = sorted({int(r) for p in phases for r in evaluations[0][p]})
    head = ["test resolution"] + [p.replace("_", " ") for p in phases]
    if len(phases) == 2:
        head.append("gain of adaptation")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in resolutions:
        cells = [str(res)]
        per_phase = {p: [e[p][str(res)]["top1"] for e in evaluations if str(res) in e[p]]
                     for p in phases}
        cells += [cell(per_phase[p]) for p in phases]
        if len(phases) == 2:
            cells.append(cell([a - b for a, b in zip(per_phase["after_adaptation"],
                                                     per_phase["before_adaptation"], strict=True)]))
        lines.append("| " + " | ".join(cells) + " |")
    first = evaluations[0][phases[-1]][str(resolutions[0])]
    n = first.get("images")
    half = [(e[phases[-1]][str(r)]["top1_ci95"][1] - e[phases[-1]][str(r)]["top1_ci95"][0]) / 2
            for e in evaluations for r in resolutions if "top1_ci95" in e[phases[-1]][str(r)]]
    lines += ["", f"Top-1 %, mean ± sample sd over seeds {', '.join(map(str, seeds))} "
              f"({n} validation images per cell"
              + (f"; 95 % Wilson half-width {statistics.mean(half):.1f} points on average"
                 if half else "") + f"). Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="recipes/quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/seeds")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="recipe override applied to every seed")
    from fgvc.cli import add_job_args

    add_job_args(parser, default=None)  # --executor: one job per seed, as a job array
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = Path(args.out)
    finished, failed = run_seeds(args, out)
    evaluations = []
    for seed, (run_dir, seconds) in finished.items():
        evaluations.append(json.loads((Path(run_dir) / "evaluation.json").read_text()))
        print(f"seed {seed}: {run_dir} ({seconds:.0f} s{', reused' if not seconds else ''})",
              file=sys.stderr)
    for seed, problem in failed.items():
        print(f"seed {seed}: {problem}; resubmit it alone with --seeds {seed}", file=sys.stderr)
    if not evaluations:
        return 1
    command = " ".join(["python benchmarks/quickstart_seeds.py", args.recipe, "--seeds",
                        *map(str, args.seeds)] + [f"--set {o}" for o in args.overrides])
    text = table(evaluations, list(finished), command)
    (out / "seeds.md").write_text(text)
    print(text, end="")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
