"""Are two runs of the same recipe the same? Every tensor of each stage's final checkpoint
compared with ``torch.equal``, and ``evaluation.json`` compared with its timings left out.

    python benchmarks/compare_runs.py runs/quickstart /elsewhere/runs/quickstart

Used to check that a refactor changes no figure: run the same recipe (e.g. the quickstart with
``--set stages.train.epochs=2``) on the code before and after, then compare the two folders.
Exit status 0 when both are identical.
"""

from __future__ import annotations

import sys

import torch

from fgvc.runfolder import RunFolder


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    return value


def main(first: str, second: str) -> int:
    a, b = RunFolder.open(first), RunFolder.open(second)
    same = True
    for stage in (s.name for s in a.read_recipe().stages):
        x = torch.load(a.checkpoint(stage), weights_only=True)["model"]
        y = torch.load(b.checkpoint(stage), weights_only=True)["model"]
        equal = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        print(f"{stage}: weights bit-identical: {equal} ({len(x)} tensors)")
        same &= equal
    equal = without_timings(a.read_evaluation()) == without_timings(b.read_evaluation())
    print(f"evaluation.json identical (timings aside): {equal}")
    return 0 if same and equal else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benchmarks/compare_runs.py RUN_A RUN_B")
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
