"""``fgvc run``: a recipe from start to finish, in its own run folder, resumable at any point.

Order: load data and model -> each stage (train, adapt) -> accuracy at every evaluation
resolution before and after adaptation -> test predictions -> submission CSV -> report.
Every step's output lands in ``runs/<name>/`` as soon as it exists, and a resumed run reuses it.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import re
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from fgvc.analysis.statistics import add_adaptation_tests, summarise_accuracy
from fgvc.datasets import DatasetIndex
from fgvc.datasets.raw import DatasetError
from fgvc.engine.adapt_methods import load_model_state
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.context import RunContext
from fgvc.engine.device import (
    channels_last_on,
    pick_device,
    precision_record,
    set_precision,
)
from fgvc.engine.distributed import (
    DistEnv,
    barrier,
    broadcast_object,
    check_same_everywhere,
    current,
    dataset_digest,
    init_distributed,
    main_first,
    node_count,
    restart_count,
    sync_buffers,
)
from fgvc.engine.evaluation_cache import PassMemo, weights_digest
from fgvc.engine.freeze import count_parameters, plan_trainable
from fgvc.engine.kept_activations import start_keeping
from fgvc.engine.loop import evaluate, predict_probabilities
from fgvc.engine.preemption import handle_signals
from fgvc.engine.seeding import seed_everything
from fgvc.engine.stage import run_stage
from fgvc.errors import RecipeError
from fgvc.inference.ensemble import mean_of
from fgvc.inference.predictions import Predictions, check_output_path
from fgvc.inference.submission import SubmissionError, check_writable, write_submission
from fgvc.io.atomic import remove_stale_temps
from fgvc.logs import open_run_file, run_logged
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import InferenceConfig, Recipe
from fgvc.recipes.splits import load_recipe_dataset
from fgvc.report import write_report
from fgvc.runfolder import RunFolder
from fgvc.tracking import open_tracker
from fgvc.workflows import activations
from fgvc.workflows.resume import check_resume, record_changes

log = logging.getLogger(__name__)


def choose_run_dir(recipe: Recipe, resume: bool, force: bool) -> Path:
    """``runs/<name>``; an existing one is resumed (--resume), replaced (--force) or kept, in
    which case this run goes to ``runs/<name>-2``, ``-3``, ... so no earlier work is lost. A
    number whose submission CSV (named after the run folder) outlived its run folder counts as
    taken too: a new run never overwrites an earlier run's output."""
    base = recipe.run_dir
    numbered = {}
    for path in base.parent.glob(f"{glob.escape(base.name)}-*"):
        match = re.fullmatch(rf"{re.escape(base.name)}-(\d+)", path.name)
        if match:
            numbered[int(match.group(1))] = path
    taken = [p for p in [base] + [numbered[k] for k in sorted(numbered)] if p.exists()]
    if resume and taken:
        return taken[-1]
    if resume:  # e.g. killed while generating its data, before the folder existed
        log.info("--resume: no earlier run of %r under %s, starting one", recipe.name,
                 base.parent)
    if force:
        with RunFolder(base).lock() if base.is_dir() else ExitStack():  # never under a live run
            shutil.rmtree(base, ignore_errors=True)
        return base
    number = max(numbered, default=1) + 1 if taken else 1
    while _taken(recipe, base if number == 1 else base.with_name(f"{base.name}-{number}")):
        number += 1
    return base if number == 1 else base.with_name(f"{base.name}-{number}")


def _taken(recipe: Recipe, run_dir: Path) -> bool:
    """The folder exists, or the submission a run there would write is left from another."""
    submission = _submission_path(recipe, run_dir)
    derived = recipe.submission is not None and recipe.submission.path is None
    return run_dir.exists() or (derived and submission is not None and submission.exists())


def setup_file_logging(run_dir: Path) -> logging.Handler:
    """``log.txt`` of the run under way (``run_recipe`` is ``@run_logged``, fgvc/logs.py),
    beginning with the records logged before the folder existed; closed when the run ends."""
    return open_run_file(RunFolder(run_dir).log_path)


def evaluate_resolutions(ctx: RunContext, phase: str) -> dict[str, dict]:
    """Accuracy at every evaluation resolution, stored in evaluation.json under ``phase``."""
    folder = RunFolder(ctx.run_dir)
    stored = folder.read_evaluation()
    if broadcast_object(phase in stored):  # every process takes the same branch
        return stored[phase]
    cfg = ctx.recipe.evaluate
    # A pass identical to an earlier one (same weights, split, resolution, crops) is reused;
    # the others share one decode per image (engine/evaluation_cache.py, inference/tta.py).
    digest = weights_digest(ctx.model)
    keys = {res: PassMemo.key(digest, cfg.split, res, cfg.crops, cfg.average)
            for res in ctx.recipe.eval_resolutions}
    # Rank 0's memo decides: the other ranks' weights differed from it before sync_buffers.
    found = broadcast_object({res: ctx.passes.get(key) for res, key in keys.items()})
    todo = [res for res, metrics in found.items() if metrics is None]
    if todo:
        began = time.perf_counter()
        # After adaptation, the resolutions whose frozen-part activations the pass before it
        # kept run the adapted tail alone (engine/kept_activations.py).
        kept = ctx.kept.serves(cfg.split, todo, cfg.crops) if ctx.kept is not None else []
        fresh = [res for res in todo if res not in kept]
        keep = (start_keeping(ctx, cfg.split, fresh, cfg.crops)
                if phase == "before_adaptation" else None)
        channels_last = ctx.recipe.model.channels_last
        if fresh:
            found.update(evaluate(ctx.model, ctx.eval_loader(cfg.split, fresh, cfg.batch_size,
                                                             cfg.crops),
                                  ctx.device, average=cfg.average, channels_last=channels_last,
                                  desc=phase, views=fresh, with_hits=True, keep=keep))
        if keep is not None:
            ctx.kept, keep.complete = keep, True
        if kept:
            log.info("%s @%s px: on the activations kept before adaptation, only the adapted "
                     "part runs", phase, ", ".join(map(str, kept)))
            found.update(evaluate(ctx.kept.tail, ctx.kept.loader(kept, cfg.batch_size),
                                  ctx.device, average=cfg.average, channels_last=channels_last,
                                  desc=f"{phase} (kept activations)", views=kept,
                                  with_hits=True))
        for res in todo:  # joint passes: each resolution is charged an equal share of them
            found[res]["seconds"] = (time.perf_counter() - began) / len(todo)
    results = {}
    for res, metrics in found.items():
        ctx.passes.put(keys[res], metrics)
        metrics = summarise_accuracy(metrics)  # the reused pass keeps its per-image hits too
        results[str(res)] = metrics if res in todo else {**metrics, "seconds": 0.0, "reused": True}
        log.info("%s @%d px: top-1 %.1f%%, top-5 %.1f%%%s", phase, res, metrics["top1"],
                 metrics["top5"], "" if res in todo else " (the identical earlier pass)")
    stored[phase] = results
    add_adaptation_tests(stored)
    if current().is_main:
        folder.write_evaluation(stored)
    ctx.tracker.evaluation(phase, results)
    return results


def predict_split(ctx: RunContext, cfg: InferenceConfig | None = None,
                  require_all: bool = True) -> Predictions:
    """Probabilities for every image of the split: crops combined at each resolution, then the
    resolutions averaged. ``cfg``: the recipe's ``predict`` section unless given."""
    cfg = cfg or ctx.recipe.predict
    resolutions = cfg.resolutions or [ctx.recipe.final_resolution]
    parts = []
    for resolution in resolutions:
        model, loader = ctx.model, None
        if ctx.kept is not None and ctx.kept.serves(cfg.split, [resolution], cfg.crops):
            model, loader = ctx.kept.tail, ctx.kept.loader(resolution, cfg.batch_size)
        loader = loader or ctx.eval_loader(cfg.split, resolution, cfg.batch_size, cfg.crops)
        indices, probs, bad = predict_probabilities(
            model, loader, ctx.device, average=cfg.average,
            channels_last=ctx.recipe.model.channels_last,
            desc=f"predict {cfg.split} @{resolution} {cfg.crops}")
        if bad and require_all:
            raise DatasetError(f"{bad} image(s) of split {cfg.split!r} are unreadable: a "
                               "prediction needs every image (run `fgvc datasets verify`)")
        parts.append(probs)
    probs = mean_of(parts, cfg.average)  # resolutions combined as the crops were
    samples = ctx.index.split(cfg.split)
    preds = Predictions(
        ids=[samples[i].image_id for i in indices],
        class_ids=list(ctx.index.category_ids),
        probs=probs.astype(np.float16),
        meta={"model": ctx.recipe.model.arch, "run": ctx.run_dir.name,
              "weights": str(ctx.final_weights) if ctx.final_weights else ctx.recipe.model.weights,
              "resolutions": resolutions, "crops": cfg.crops, "average": cfg.average,
              "split": cfg.split, "dataset": ctx.index.name, "processes": current().world_size},
    )
    keep = getattr(cfg, "keep_top_k", None)  # a predict section may keep only the top k
    return preds.keep_top_k(keep) if keep else preds


@run_logged
def run_recipe(recipe: Recipe, *, resume: bool = False, force: bool = False,
               allow_changes: list[str] | None = None, run_dir: Path | None = None,
               started: float | None = None) -> Path:
    """Run every step of ``recipe``; returns the run folder.

    ``resume`` continues the latest run of the recipe (or ``run_dir``), refusing a recipe that
    differs from the run's own except in the ``allow_changes`` fields. Under torchrun every
    process runs this; the main one chooses and locks the folder and writes every file, the
    others train and evaluate their shards. ``started``: the ``time.perf_counter()`` at which
    the invocation began (the CLI: the process's start), so that the run time in summary.json
    and the report is the invocation's wall time, imports included; default: now.
    """
    start = time.perf_counter() if started is None else started
    device, env = _device_and_processes(recipe)
    if restart_count():  # torchrun --max-restarts restarted the group: continue its run
        log.info("restart %d by torchrun: resuming the run", restart_count())
        run_dir = run_dir or (recipe.run_dir if force else None)  # --force ran in runs/<name>
        resume, force = True, False
    planned = broadcast_object(
        _plan_outputs(recipe, resume, force, allow_changes or [], run_dir) if env.is_main
        else None)
    if planned[3]:
        log.info("%s is finished: nothing to do (`fgvc report %s` rebuilds its report, "
                 "`fgvc predict %s` predicts again)", planned[0], planned[0], planned[0])
        return planned[0]
    # Data and splits are checked before the run folder exists: a typo in a path leaves
    # nothing behind. The main process reads (or generates) the data first.
    index = _shared_dataset(recipe)
    _check_splits(recipe, index)
    held = ExitStack()  # the folder's lock and the signal handlers, released in this order
    tracker = None
    try:
        if env.is_main:
            run_dir = _claim_run_dir(recipe, planned[0], planned[2] is not None, held)
            setup_file_logging(run_dir)
            record_changes(run_dir, planned[2] or {})
            _discard_outdated_work(RunFolder(run_dir), recipe, planned[2] or {})
            RunFolder(run_dir).write_recipe(recipe)
            log.info("run folder %s%s", run_dir,
                     f" ({env.world_size} processes, {node_count()} node(s))" if env.enabled
                     else "")
        run_dir = broadcast_object(run_dir if env.is_main else None)
        submission_path = _submission_path(recipe, run_dir)
        barrier()
        held.enter_context(handle_signals(run_dir))
        seed_everything(recipe.seed)
        model = main_first(lambda: create_model(recipe.model, index.num_classes)).to(device)
        if channels_last_on(device, recipe.model.channels_last):
            model = model.to(memory_format=torch.channels_last)
        ctx = RunContext(recipe, run_dir, index, model, data_config(model, recipe.model), device)
        if env.is_main:
            ctx.tracker = tracker = open_tracker(
                recipe.tracking, run_dir.name, run_dir, recipe.to_dict(),
                tensorboard_dir=RunFolder(run_dir).tensorboard_dir)
        trainable, selected = {}, {}
        for stage in recipe.stages:
            trainable[stage.name] = _describe_trainable(model, stage.trainable)
            if stage.name == "adapt":
                evaluate_resolutions(ctx, "before_adaptation")
            final = ctx.final_checkpoint(stage)
            if final.exists():
                done = load_checkpoint(final)
                load_model_state(model, done["model"], final)
                selected[stage.name] = done.get("selected")
                log.info("%s: already done, loaded %s", stage.name, final)
                continue
            selected[stage.name] = run_stage(ctx, stage)
            sync_buffers(model)  # every shard evaluates and predicts with the saved weights
        evaluate_resolutions(ctx, "after_adaptation" if recipe.stage("adapt")
                             else "before_adaptation")
        # Per-image predictions on the evaluation split at the final resolution: the report's
        # per-class accuracy, macro-F1 and confusions are computed from them.
        final_eval = dataclasses.replace(recipe.evaluate, resolutions=[recipe.final_resolution])
        eval_preds = predict_split(ctx, final_eval, require_all=False)
        if ctx.kept is not None:
            ctx.kept.close()
            ctx.kept = None
        began = time.perf_counter()
        preds = predict_split(ctx) if recipe.predict is not None else None
        predict_seconds = time.perf_counter() - began
        if env.is_main:
            eval_preds.save(RunFolder(run_dir).eval_predictions_dir)
            _write_outputs(ctx, preds, submission_path, start, trainable, selected,
                           predict_seconds if preds is not None else None,
                           overwrite_submission=force or planned[2] is not None)
        barrier()
        return run_dir
    finally:
        if tracker is not None:
            tracker.close()
        held.close()


def _discard_outdated_work(folder: RunFolder, recipe: Recipe, changes: dict) -> None:
    """Resuming with changed fields: stored evaluations are recomputed when the evaluation
    changed (its section, or test DA's decode, which gives other pixels); a finished stage is
    kept as it is, and a change to it says that it does not apply."""
    changed_eval = [k for k in changes if k.startswith("evaluate.") or k == "dataset.test_decode"]
    if changed_eval and folder.evaluation_path.exists():
        folder.evaluation_path.unlink()
        log.info("%s changed: the evaluations are computed again", ", ".join(changed_eval))
    for stage in recipe.stages:
        changed = [k for k in changes if k.startswith(f"stages.{stage.name}.")]
        if changed and folder.checkpoint(stage.name).exists():
            log.warning("%s: stage %r is finished (%s), so the change does not apply to it; a "
                        "new run (without --resume) trains with it", ", ".join(changed),
                        stage.name, folder.checkpoint(stage.name))


def _claim_run_dir(recipe: Recipe, run_dir: Path, resuming: bool, held: ExitStack) -> Path:
    """Create (or, resuming, reuse) the run folder and lock it for this process (the lock is
    released with ``held``). Two first runs that picked the same folder at once end in two
    folders: the second takes the next number."""
    while not resuming:
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            run_dir = choose_run_dir(recipe, resume=False, force=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(RunFolder(run_dir).lock())
    for path in remove_stale_temps(run_dir):
        log.info("removed %s, left by an interrupted write", path)
    return run_dir


def _shared_dataset(recipe: Recipe) -> DatasetIndex:
    """The recipe's dataset, read (generated, checked) by the main process first, then by the
    others, which must see what it saw (several nodes share one filesystem)."""
    index = main_first(lambda: load_recipe_dataset(recipe))
    ds = recipe.dataset
    check_same_everywhere(f"dataset {ds.name!r} at {ds.root}", lambda: dataset_digest(index))
    return index


def _device_and_processes(recipe: Recipe) -> tuple[torch.device, DistEnv]:
    """The device, and this process's place under torchrun (one GPU per process)."""
    device = pick_device(recipe.device)
    set_precision(recipe.precision, device)
    env = init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    return device, env


def _plan_outputs(recipe: Recipe, resume: bool, force: bool, allow_changes: list[str],
                  run_dir: Path | None) -> tuple[Path, Path | None, dict | None, bool]:
    """The run folder, the submission path, (resuming an earlier run) the recipe changes
    allowed, and whether that run is finished with nothing changed, so nothing is left to do.
    Before any work: an existing submission is refused unless forced, and a resumed run whose
    recipe differs from its own is refused unless the changes are allowed."""
    run_dir = run_dir or choose_run_dir(recipe, resume, force)
    resuming = resume and run_dir.is_dir()
    changes = None
    if resuming:
        changes = (check_resume(run_dir, recipe, allow_changes)
                   if RunFolder(run_dir).recipe_path.is_file() else {})
    submission_path = _submission_path(recipe, run_dir)
    if submission_path is not None and not resuming:
        check_writable(submission_path, force)
    finished = resuming and not changes and RunFolder(run_dir).finished
    return run_dir, submission_path, changes, finished


def _submission_path(recipe: Recipe, run_dir: Path) -> Path | None:
    """The recipe's submission path, named after the run folder unless the recipe sets one."""
    submission_path = recipe.submission_path
    if submission_path is not None and recipe.submission.path is None:
        submission_path = submission_path.with_name(f"{run_dir.name}.csv")
    return submission_path



def _write_run_submission(ctx: RunContext, preds: Predictions, path: Path,
                          overwrite: bool) -> Path:
    """The submission CSV; where another run wrote the same file since this one checked it,
    this run's CSV goes into its own folder instead, with a warning (no output is lost or
    overwritten)."""
    recipe = ctx.recipe
    expected = [s.image_id for s in ctx.index.split(recipe.predict.split)]
    try:
        write_submission(preds, path, recipe.submission.format, recipe.submission.top_k,
                         expected_ids=expected, force=overwrite)
    except SubmissionError:
        if overwrite or not path.exists():
            raise
        kept = RunFolder(ctx.run_dir).file(path.name)
        log.warning("%s was written by another run while this one ran; this run's submission "
                    "goes to %s instead", path, kept)
        path = write_submission(preds, kept, recipe.submission.format, recipe.submission.top_k,
                                expected_ids=expected, force=True)
    log.info("submission written to %s", path)
    return path

def _write_outputs(ctx: RunContext, preds: Predictions | None, submission_path: Path | None,
                   start: float, trainable: dict[str, str],
                   selected: dict[str, dict | None],
                   predict_seconds: float | None = None,
                   overwrite_submission: bool = True) -> None:
    recipe, index, run_dir = ctx.recipe, ctx.index, ctx.run_dir
    folder = RunFolder(run_dir)
    summary = {
        "num_classes": index.num_classes,
        "split_sizes": {k: len(v) for k, v in index.splits.items()},
        "parameters": count_parameters(ctx.model), "device": str(ctx.device),
        "processes": current().world_size, "nodes": node_count(), "trainable": trainable,
        "precision": precision_record(ctx.device),
        "weights_used": selected,
    }
    if preds is not None:
        preds.save(folder.predictions_dir)
        summary["predictions"] = str(folder.predictions_dir)
        if submission_path is not None:
            summary["submission"] = str(_write_run_submission(ctx, preds, submission_path,
                                                              overwrite_submission))
    if predict_seconds is not None:
        summary["predict_seconds"] = predict_seconds
    if recipe.stage("adapt") is not None:  # forward passes of the run: inside its time
        activations.record_after_run(run_dir)
    summary["seconds"] = time.perf_counter() - start  # until the report is built, below
    summary["top1"] = final_top1(recipe, folder.read_evaluation())
    # Last, being long: what `fgvc predict --images` and fgvc.load_run name the classes by.
    summary["category_ids"] = list(index.category_ids)
    summary["class_names"] = list(index.classes)
    folder.write_summary(summary)
    report = write_report(run_dir, recipe, summary, index, ctx.tracker,
                          clock=lambda: time.perf_counter() - start)
    folder.write_summary(summary)  # the run time as the report has it
    log.info("report: %s", report)


def final_top1(recipe: Recipe, evaluation: dict) -> dict | None:
    """The run's headline: top-1 (%) at the test resolution it adapted to, with its 95 %
    Wilson interval, from ``evaluation.json``; ``None`` when that resolution was not evaluated
    (``evaluate.resolutions`` leaves it out)."""
    phase = "after_adaptation" if recipe.stage("adapt") is not None else "before_adaptation"
    entry = evaluation.get(phase, {}).get(str(recipe.final_resolution))
    if not entry or "top1" not in entry:
        log.info("summary: no top-1 at the final resolution %d px (evaluate.resolutions does "
                 "not include it)", recipe.final_resolution)
        return None
    return {"resolution": recipe.final_resolution, "value": round(float(entry["top1"]), 3),
            "ci95": entry.get("top1_ci95"), "split": recipe.evaluate.split,
            "images": entry.get("images"), "phase": phase}


def _check_splits(recipe: Recipe, index: DatasetIndex) -> None:
    """Fail before any training if a split the recipe needs is absent or unlabelled; the
    message names the field that fixes it (fgvc/recipes/splits.py, shared with validate)."""
    from fgvc.recipes.splits import split_problems

    problems = split_problems(recipe, index)
    if problems:
        raise RecipeError(problems[0])


def _describe_trainable(model: torch.nn.Module, trainable: str | list[str]) -> str:
    plan = plan_trainable(model, trainable)
    if plan.everything:
        return "all"
    return ", ".join(f"{g} = {'/'.join(p)}" for g, p in plan.groups.items())


def predict_run(run_dir: Path, overrides: list[str], out: Path | None = None,
                force: bool = False) -> tuple[Path, Predictions]:
    """Predict again with a finished run's weights, e.g. with other crops or resolutions
    (``overrides`` such as ``predict.crops=ten_crop``); returns where the file went."""
    from fgvc.recipes.recipe import apply_overrides, parse_recipe

    folder = RunFolder.open(run_dir)
    data = apply_overrides(folder.read_recipe_data(), overrides, str(folder.recipe_path))
    data["predict"] = data.get("predict") or {}
    recipe = parse_recipe(data, str(folder.recipe_path))
    weights = folder.final_weights(recipe)
    cfg = recipe.predict
    resolutions = cfg.resolutions or [recipe.final_resolution]
    out = out or folder.predictions_for(cfg.split, cfg.crops, resolutions)
    device, env = _device_and_processes(recipe)
    if env.is_main:
        check_output_path(out)
        check_writable(out, force)
    index = _shared_dataset(recipe)
    model_cfg = dataclasses.replace(recipe.model, pretrained="none", weights=None)
    model = create_model(model_cfg, index.num_classes).to(device)
    load_model_state(model, load_checkpoint(weights)["model"], weights)
    ctx = RunContext(recipe, run_dir, index, model, data_config(model, recipe.model), device)
    preds = predict_split(ctx)
    if env.is_main:
        preds.save(out)
    barrier()
    return out, preds
