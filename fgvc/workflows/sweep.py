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
from typing import TYPE_CHECKING, Any

from fgvc.engine.distributed import barrier, current
from fgvc.errors import RecipeError
from fgvc.io.atomic import atomic_write
from fgvc.recipes.recipe import Recipe, parse_recipe
from fgvc.recipes.schema import to_plain
from fgvc.runfolder import RunFolder

if TYPE_CHECKING:
    from fgvc.analysis.statistics import PairedTest
    from fgvc.workflows.launch import JobResources

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class HowSure:
    """How sure a protocol's figures are (fgvc.analysis.statistics): 95 % Wilson intervals,
    McNemar exact p-values, and each gain on the same images (top-1 difference, percentage
    points) with its 95 % Newcombe interval; shared by a sweep's result and a Table 3 row."""

    images: int | None = None
    baseline_ci: list[float] | None = None
    no_adaptation_ci: list[float] | None = None
    adapted_ci: list[float] | None = None
    adapted_vs_no_adaptation_p: float | None = None
    adapted_vs_baseline_p: float | None = None
    adapted_vs_no_adaptation_gain: float | None = None
    adapted_vs_no_adaptation_gain_ci: list[float] | None = None
    adapted_vs_baseline_gain: float | None = None
    adapted_vs_baseline_gain_ci: list[float] | None = None
    sweep_ci: dict[str, list[float]] = field(default_factory=dict)
    runner_up: int | None = None
    chosen_vs_runner_up_p: float | None = None
    chosen_vs_runner_up_gain: float | None = None
    chosen_vs_runner_up_gain_ci: list[float] | None = None
    final: bool = False  # figures from a retrain on the whole training split (--final)


@dataclass
class ProtocolResult(HowSure):
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
    return RunFolder(run_dir).read_evaluation()


def run_protocol(recipe: Recipe, out_dir: Path, final: bool = False) -> ProtocolResult:
    """Train, choose K_test on validation data, adapt, evaluate: see the module docstring.

    ``final``: once K_test is chosen on the held-out slice, train again on the whole training
    split (``dataset.holdout`` 0; per-epoch validation then runs on the evaluation split and is
    only logged) and adapt that network at K_test; the reported figures are that network's.
    """
    cached = out_dir / ("result-final.json" if final else "result.json")
    if cached.exists():
        log.info("%s: finished earlier, reusing %s", recipe.name, cached)
        return ProtocolResult(**json.loads(cached.read_text()))
    train, adapt = recipe.stage("train"), recipe.stage("adapt")
    if train is None or adapt is None:
        raise RecipeError(f"{recipe.name}: the protocol needs a train and an adapt stage")
    evaluate = to_plain(recipe.evaluate)

    def evaluated(name: str, stages: list[dict], split: str, resolutions: list[int],
                  **changes: Any) -> dict:
        variant = _variant(recipe, name, stages=stages, output_root=str(out_dir),
                           evaluate={**evaluate, "split": split, "resolutions": resolutions},
                           **changes)
        return _evaluation(variant)

    def adapted_at(resolution: int, name: str, split: str, resolutions: list[int],
                   weights_from: str = "train", **changes: Any) -> dict:
        weights = str(RunFolder(out_dir / weights_from).checkpoint("train"))
        model = {**to_plain(recipe.model), "pretrained": "none", "weights": weights}
        stage = {**to_plain(adapt), "resolution": resolution,
                 "reference_resolution": adapt.reference_resolution or train.resolution}
        return evaluated(name, [stage], split, resolutions, model=model, **changes)

    evaluated("train", [to_plain(train)], recipe.evaluate.split, [train.resolution])
    found: dict[str, dict] = {}
    for res in recipe.sweep_resolutions or []:
        found[str(res)] = adapted_at(res, f"sweep-{res}", recipe.dataset.val_split,
                                     [res])["after_adaptation"][str(res)]
        log.info("%s: adapted at %d px, %s top-1 %.2f", recipe.name, res,
                 recipe.dataset.val_split, found[str(res)]["top1"])
    sweep = {r: e["top1"] for r, e in found.items()}
    ranked = sorted(sweep, key=lambda r: (-sweep[r], int(r)))
    test_res = int(ranked[0]) if ranked else adapt.resolution
    source, prefix, changes = "train", "", {}
    if final:
        source, prefix = "train-final", "final-"
        changes = {"dataset": {**to_plain(recipe.dataset), "holdout": 0.0,
                               "val_split": recipe.evaluate.split}}
        evaluated("train-final", [to_plain(train)], recipe.evaluate.split, [train.resolution],
                  **changes)
    result_eval = adapted_at(test_res, f"adapt-{prefix}{test_res}", recipe.evaluate.split,
                             sorted({train.resolution, test_res}), weights_from=source,
                             **changes)
    result = summarise_protocol(recipe, result_eval, train.resolution, test_res, found, final)
    if current().is_main:
        atomic_write(cached, json.dumps(asdict(result), indent=2) + "\n")
    barrier()
    return result


def run_protocol_as_job(recipe: Recipe, out_dir: Path, final: bool,
                        resources: JobResources) -> ProtocolResult:
    """``run_protocol`` as one submitit job (fgvc/workflows/fanout.py), waited for; a failed
    job is one line naming its log."""
    from fgvc.workflows.fanout import Task, run_tasks
    from fgvc.workflows.launch import JobFailedError

    gathered = run_tasks([Task(recipe.name, run_protocol, (recipe, out_dir, final))], resources,
                         f"{recipe.name}-sweep", out_dir)
    if recipe.name in gathered.failed:
        raise JobFailedError(f"sweep {recipe.name}: {gathered.failed[recipe.name]}")
    return gathered.results[recipe.name]


def summarise_protocol(recipe: Recipe, evaluation: dict, train_res: int, test_res: int,
                       sweep: dict[str, dict], final: bool) -> ProtocolResult:
    """Figures, intervals and paired tests of a finished protocol."""
    from fgvc.analysis.statistics import paired_test

    before, after = evaluation["before_adaptation"], evaluation["after_adaptation"]
    base, plain, adapted = before[str(train_res)], before[str(test_res)], after[str(test_res)]
    ranked = sorted(sweep, key=lambda r: (-sweep[r]["top1"], int(r)))
    runner_up = int(ranked[1]) if len(ranked) > 1 else None
    vs_runner = paired_test(sweep[ranked[0]], sweep[ranked[1]]) if runner_up else None
    vs_plain, vs_base = paired_test(adapted, plain), paired_test(adapted, base)
    return ProtocolResult(
        **_paired_fields("adapted_vs_no_adaptation", vs_plain),
        **_paired_fields("adapted_vs_baseline", vs_base),
        **_paired_fields("chosen_vs_runner_up", vs_runner),
        model=recipe.model.arch, train_resolution=train_res, test_resolution=test_res,
        baseline=base["top1"], test_resolution_no_adaptation=plain["top1"],
        adapted=adapted["top1"], sweep={r: e["top1"] for r, e in sweep.items()},
        images=adapted.get("images"), baseline_ci=base.get("top1_ci95"),
        no_adaptation_ci=plain.get("top1_ci95"), adapted_ci=adapted.get("top1_ci95"),
        sweep_ci={r: e["top1_ci95"] for r, e in sweep.items() if "top1_ci95" in e},
        runner_up=runner_up, final=final)


def _paired_fields(name: str, test: PairedTest | None) -> dict:
    """``<name>_p``, ``<name>_gain`` and ``<name>_gain_ci`` of a paired test (all None without
    one: the runs kept no per-image hits, or scored different images)."""
    return {f"{name}_p": test.p_value if test else None,
            f"{name}_gain": test.gain if test else None,
            f"{name}_gain_ci": test.gain_ci95 if test else None}


def format_result(recipe: Recipe, result: ProtocolResult) -> str:
    from fgvc.analysis.statistics import format_ci, format_gain

    lines = [f"# {recipe.name}: test resolution chosen on {recipe.dataset.val_split!r}", ""]
    if result.sweep:
        lines += ["| adapted at | validation top-1 [95 % Wilson CI] |", "|---|---|"]
        lines += [f"| {r}{' (chosen)' if int(r) == result.test_resolution else ''}"
                  f"{' (runner-up)' if result.runner_up == int(r) else ''} | "
                  f"{format_ci(a, result.sweep_ci.get(r))} |" for r, a in result.sweep.items()]
        lines.append("")
        if result.runner_up is not None:
            p = result.chosen_vs_runner_up_p
            verdict = ("distinguishable" if p is not None and p < 0.05 else
                       "not distinguishable at the 5 % level")
            gain = format_gain(result.chosen_vs_runner_up_gain, result.chosen_vs_runner_up_gain_ci,
                               p)
            lines += [f"Chosen {result.test_resolution} px vs runner-up {result.runner_up} px "
                      f"on the same validation images: {gain}, {verdict}.", ""]
    split = recipe.evaluate.split
    trained = " (retrained on the whole training split)" if result.final else ""
    lines += [f"| {split} split, single centre crop{trained} | top-1 [95 % Wilson CI] |",
              "|---|---|",
              f"| {result.train_resolution} px (train), no adaptation | "
              f"{format_ci(result.baseline, result.baseline_ci)} |",
              f"| {result.test_resolution} px, no adaptation | "
              f"{format_ci(result.test_resolution_no_adaptation, result.no_adaptation_ci)} |",
              f"| {result.test_resolution} px, adapted | "
              f"{format_ci(result.adapted, result.adapted_ci)} |", ""]
    lines += [f"Gains on the same {result.images} images: top-1 difference, 95 % Newcombe "
              "interval (method 10, paired), McNemar exact p:", "",
              f"- adapted vs no adaptation at {result.test_resolution} px: "
              + format_gain(result.adapted_vs_no_adaptation_gain,
                            result.adapted_vs_no_adaptation_gain_ci,
                            result.adapted_vs_no_adaptation_p),
              f"- adapted vs the {result.train_resolution} px baseline: "
              + format_gain(result.adapted_vs_baseline_gain, result.adapted_vs_baseline_gain_ci,
                            result.adapted_vs_baseline_p)]
    return "\n".join(lines) + "\n"
