"""The FixRes protocol with the test resolution chosen on validation data.

Train the whole network once at K_train; adapt (stage 2) at every candidate of
``sweep_resolutions`` and keep the one that scores best on the validation split (ties go to the
smaller resolution; without candidates, the recipe's adapt resolution); adapt at it and report
the evaluation split at K_train (baseline), at K_test without adaptation, and after adaptation.
The test split is only ever evaluated, never used to choose.

Every step is an ordinary fgvc run under ``out_dir`` (``train/``, ``sweep-<K>/``,
``adapt-<K>/``), so an interrupted sweep resumes where it stopped; ``result.json`` marks a
finished one, which is then never recomputed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fgvc.engine.atomic import atomic_write
from fgvc.engine.distributed import barrier, current
from fgvc.recipes.recipe import Recipe, parse_recipe
from fgvc.recipes.schema import to_plain

log = logging.getLogger(__name__)


@dataclass
class ProtocolResult:
    model: str
    train_resolution: int
    test_resolution: int
    baseline: float
    test_resolution_no_adaptation: float
    adapted: float
    sweep: dict[str, float] = field(default_factory=dict)


def _variant(recipe: Recipe, name: str, **changes: Any) -> Recipe:
    data = recipe.to_dict()
    data.update(name=name, predict=None, submission=None, sweep_resolutions=None, **changes)
    return parse_recipe(data, f"variant {name} of {recipe.name}")


def _evaluation(recipe: Recipe) -> dict[str, dict[str, dict]]:
    from fgvc.workflows.pipeline import run_recipe

    run_dir = run_recipe(recipe, resume=recipe.run_dir.exists())
    return json.loads((run_dir / "evaluation.json").read_text())


def run_protocol(recipe: Recipe, out_dir: Path) -> ProtocolResult:
    """Train, choose K_test on validation data, adapt, evaluate: see the module docstring."""
    cached = out_dir / "result.json"
    if cached.exists():
        log.info("%s: finished earlier, reusing %s", recipe.name, cached)
        return ProtocolResult(**json.loads(cached.read_text()))
    train, adapt = recipe.stage("train"), recipe.stage("adapt")
    if train is None or adapt is None:
        raise ValueError(f"{recipe.name}: the protocol needs a train and an adapt stage")
    evaluate = to_plain(recipe.evaluate)

    def evaluated(name: str, stages: list[dict], split: str, resolutions: list[int],
                  **changes: Any) -> dict:
        variant = _variant(recipe, name, stages=stages, output_root=str(out_dir),
                           evaluate={**evaluate, "split": split, "resolutions": resolutions},
                           **changes)
        return _evaluation(variant)

    evaluated("train", [to_plain(train)], recipe.evaluate.split, [train.resolution])
    weights = str(out_dir / "train" / "checkpoints" / "train.pt")
    model = {**to_plain(recipe.model), "pretrained": "none", "weights": weights}

    def adapted_at(resolution: int, name: str, split: str, resolutions: list[int]) -> dict:
        stage = {**to_plain(adapt), "resolution": resolution}
        return evaluated(name, [stage], split, resolutions, model=model)

    sweep: dict[str, float] = {}
    for res in recipe.sweep_resolutions or []:
        found = adapted_at(res, f"sweep-{res}", recipe.dataset.val_split, [res])
        sweep[str(res)] = found["after_adaptation"][str(res)]["top1"]
        log.info("%s: adapted at %d px, %s top-1 %.2f", recipe.name, res,
                 recipe.dataset.val_split, sweep[str(res)])
    test_res = int(max(sweep, key=lambda r: (sweep[r], -int(r)))) if sweep else adapt.resolution
    final = adapted_at(test_res, f"adapt-{test_res}", recipe.evaluate.split,
                       sorted({train.resolution, test_res}))
    result = ProtocolResult(
        model=recipe.model.arch, train_resolution=train.resolution, test_resolution=test_res,
        baseline=final["before_adaptation"][str(train.resolution)]["top1"],
        test_resolution_no_adaptation=final["before_adaptation"][str(test_res)]["top1"],
        adapted=final["after_adaptation"][str(test_res)]["top1"], sweep=sweep)
    if current().is_main:
        atomic_write(cached, json.dumps(asdict(result), indent=2) + "\n")
    barrier()
    return result


def format_result(recipe: Recipe, result: ProtocolResult) -> str:
    lines = [f"# {recipe.name}: test resolution chosen on {recipe.dataset.val_split!r}", ""]
    if result.sweep:
        lines += ["| adapted at | validation top-1 |", "|---|---|"]
        lines += [f"| {r}{' (chosen)' if int(r) == result.test_resolution else ''} | {a:.2f} |"
                  for r, a in result.sweep.items()]
        lines.append("")
    split = recipe.evaluate.split
    lines += [f"| {split} split, single centre crop | top-1 |", "|---|---|",
              f"| {result.train_resolution} px (train), no adaptation | {result.baseline:.2f} |",
              f"| {result.test_resolution} px, no adaptation | "
              f"{result.test_resolution_no_adaptation:.2f} |",
              f"| {result.test_resolution} px, adapted | {result.adapted:.2f} |"]
    return "\n".join(lines) + "\n"
