"""``fgvc run``: a recipe from start to finish, in its own run folder, resumable at any point.

Order: load data and model -> each stage (train, adapt) -> accuracy at every evaluation
resolution before and after adaptation -> test predictions -> submission CSV -> report.
Every step's output lands in ``runs/<name>/`` as soon as it exists, and a resumed run reuses it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import re
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from fgvc.analysis import activations
from fgvc.analysis.statistics import add_adaptation_tests, summarise_accuracy
from fgvc.datasets import DatasetIndex, load_dataset
from fgvc.datasets.base import with_holdout
from fgvc.engine.adapt_methods import load_model_state
from fgvc.engine.atomic import atomic_write, read_json, remove_stale_temps
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.device import channels_last_on, pick_device, set_precision
from fgvc.engine.distributed import (
    DistEnv,
    barrier,
    broadcast_object,
    current,
    init_distributed,
    main_first,
)
from fgvc.engine.evaluation_cache import PassMemo, weights_digest
from fgvc.engine.freeze import count_parameters, plan_trainable
from fgvc.engine.kept_activations import start_keeping
from fgvc.engine.loop import evaluate, predict_probabilities
from fgvc.engine.preemption import handle_signals
from fgvc.engine.seeding import seed_everything
from fgvc.engine.stage import RunContext, run_stage
from fgvc.inference.predictions import Predictions, check_output_path
from fgvc.inference.submission import check_writable, write_submission
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import InferenceConfig, Recipe
from fgvc.report import write_report
from fgvc.tracking import open_tracker
from fgvc.workflows.resume import check_resume, dump_recipe, record_changes
from fgvc.workflows.runlock import FolderLock

log = logging.getLogger(__name__)


def choose_run_dir(recipe: Recipe, resume: bool, force: bool) -> Path:
    """``runs/<name>``; an existing one is resumed (--resume), replaced (--force) or kept, in
    which case this run goes to ``runs/<name>-2``, ``-3``, ... so no earlier work is lost."""
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
        with FolderLock(base) if base.is_dir() else ExitStack():  # never under a live run
            shutil.rmtree(base, ignore_errors=True)
        return base
    if not taken:
        return base
    return base.with_name(f"{base.name}-{max(numbered, default=1) + 1}")


class _RunLogHandler(logging.FileHandler):
    """``log.txt``; when the disk is full a lost log line is not worth a logging traceback
    burying the one-line error that names the file that could not be written."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def setup_file_logging(run_dir: Path) -> logging.Handler:
    handler = _RunLogHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def evaluate_resolutions(ctx: RunContext, phase: str) -> dict[str, dict]:
    """Accuracy at every evaluation resolution, stored in evaluation.json under ``phase``."""
    path = ctx.run_dir / "evaluation.json"
    stored = read_json(path) if path.exists() else {}
    if broadcast_object(phase in stored):  # every process takes the same branch
        return stored[phase]
    cfg = ctx.recipe.evaluate
    # A pass identical to an earlier one (same weights, split, resolution, crops) is reused;
    # the others share one decode per image (engine/evaluation_cache.py, inference/tta.py).
    digest = weights_digest(ctx.model)
    keys = {res: PassMemo.key(digest, cfg.split, res, cfg.crops, cfg.average)
            for res in ctx.recipe.eval_resolutions}
    found = {res: ctx.passes.get(key) for res, key in keys.items()}
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
        atomic_write(path, json.dumps(stored, indent=2) + "\n")
    ctx.tracker.evaluation(phase, results)
    return results


def predict_split(ctx: RunContext, cfg: InferenceConfig | None = None,
                  require_all: bool = True) -> Predictions:
    """Probabilities for every image of the split: crops combined at each resolution, then the
    resolutions averaged. ``cfg``: the recipe's ``predict`` section unless given."""
    cfg = cfg or ctx.recipe.predict
    resolutions = cfg.resolutions or [ctx.recipe.final_resolution]
    total = None
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
            raise RuntimeError(f"{bad} image(s) of split {cfg.split!r} are unreadable: a "
                               "prediction needs every image (run `fgvc datasets verify`)")
        total = probs if total is None else total + probs
    samples = ctx.index.split(cfg.split)
    preds = Predictions(
        ids=[samples[i].image_id for i in indices],
        class_ids=list(ctx.index.category_ids),
        probs=(total / len(resolutions)).astype(np.float16),
        meta={"model": ctx.recipe.model.arch, "run": ctx.run_dir.name,
              "weights": str(ctx.final_weights) if ctx.final_weights else ctx.recipe.model.weights,
              "resolutions": resolutions, "crops": cfg.crops, "average": cfg.average,
              "split": cfg.split, "dataset": ctx.index.name, "processes": current().world_size},
    )
    keep = getattr(cfg, "keep_top_k", None)  # a predict section may keep only the top k
    return preds.keep_top_k(keep) if keep else preds


def run_recipe(recipe: Recipe, *, resume: bool = False, force: bool = False,
               allow_changes: list[str] | None = None, run_dir: Path | None = None) -> Path:
    """Run every step of ``recipe``; returns the run folder.

    ``resume`` continues the latest run of the recipe (or ``run_dir``), refusing a recipe that
    differs from the run's own except in the ``allow_changes`` fields. Under torchrun every
    process runs this; the main one chooses and locks the folder and writes every file, the
    others train and evaluate their shards.
    """
    start = time.perf_counter()
    device, env = _device_and_processes(recipe)
    planned = broadcast_object(
        _plan_outputs(recipe, resume, force, allow_changes or [], run_dir) if env.is_main
        else None)
    # Data and splits are checked before the run folder exists: a typo in a path leaves
    # nothing behind. The main process reads (or generates) the data first.
    index = main_first(lambda: load_recipe_dataset(recipe))
    _check_splits(recipe, index)
    handler = None
    held = ExitStack()  # the folder's lock and the signal handlers, released in this order
    tracker = None
    try:
        if env.is_main:
            run_dir = _claim_run_dir(recipe, planned[0], planned[2] is not None, held)
            handler = setup_file_logging(run_dir)
            record_changes(run_dir, planned[2] or {})
            atomic_write(run_dir / "recipe.yaml", dump_recipe(recipe))
            log.info("run folder %s%s", run_dir,
                     f" ({env.world_size} processes)" if env.enabled else "")
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
            ctx.tracker = tracker = open_tracker(recipe.tracking, run_dir.name, run_dir,
                                                 recipe.to_dict())
        trainable, selected = {}, {}
        for stage in recipe.stages:
            trainable[stage.name] = _describe_trainable(model, stage.trainable)
            if stage.name == "adapt":
                evaluate_resolutions(ctx, "before_adaptation")
            final = ctx.final_checkpoint(stage)
            if final.exists():
                done = load_checkpoint(final)
                load_model_state(model, done["model"])
                selected[stage.name] = done.get("selected")
                log.info("%s: already done, loaded %s", stage.name, final)
                continue
            selected[stage.name] = run_stage(ctx, stage)
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
            eval_preds.save(run_dir / "eval_predictions")
            _write_outputs(ctx, preds, submission_path, start, trainable, selected,
                           predict_seconds if preds is not None else None)
        barrier()
        return run_dir
    finally:
        if tracker is not None:
            tracker.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        held.close()


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
    held.enter_context(FolderLock(run_dir))
    for path in remove_stale_temps(run_dir):
        log.info("removed %s, left by an interrupted write", path)
    return run_dir


def _device_and_processes(recipe: Recipe) -> tuple[torch.device, DistEnv]:
    """The device, and this process's place under torchrun (one GPU per process)."""
    device = pick_device(recipe.device)
    set_precision(recipe.precision, device)
    env = init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    return device, env


def _plan_outputs(recipe: Recipe, resume: bool, force: bool, allow_changes: list[str],
                  run_dir: Path | None) -> tuple[Path, Path | None, dict | None]:
    """The run folder, the submission path, and (resuming an earlier run) the recipe changes
    allowed. Before any work: an existing submission is refused unless forced, and a resumed
    run whose recipe differs from its own is refused unless the changes are allowed."""
    run_dir = run_dir or choose_run_dir(recipe, resume, force)
    resuming = resume and run_dir.is_dir()
    changes = None
    if resuming:
        changes = (check_resume(run_dir, recipe, allow_changes)
                   if (run_dir / "recipe.yaml").is_file() else {})
    submission_path = _submission_path(recipe, run_dir)
    if submission_path is not None and not resuming:
        check_writable(submission_path, force)
    return run_dir, submission_path, changes


def _submission_path(recipe: Recipe, run_dir: Path) -> Path | None:
    """The recipe's submission path, named after the run folder unless the recipe sets one."""
    submission_path = recipe.submission_path
    if submission_path is not None and recipe.submission.path is None:
        submission_path = submission_path.with_name(f"{run_dir.name}.csv")
    return submission_path


def _write_outputs(ctx: RunContext, preds: Predictions | None, submission_path: Path | None,
                   start: float, trainable: dict[str, str],
                   selected: dict[str, dict | None],
                   predict_seconds: float | None = None) -> None:
    recipe, index, run_dir = ctx.recipe, ctx.index, ctx.run_dir
    summary = {
        "num_classes": index.num_classes,
        "split_sizes": {k: len(v) for k, v in index.splits.items()},
        "parameters": count_parameters(ctx.model), "device": str(ctx.device),
        "processes": current().world_size, "trainable": trainable,
        "weights_used": selected,
    }
    if preds is not None:
        preds.save(run_dir / "predictions")
        summary["predictions"] = str(run_dir / "predictions")
        if submission_path is not None:
            expected = [s.image_id for s in index.split(recipe.predict.split)]
            write_submission(preds, submission_path, recipe.submission.format,
                             recipe.submission.top_k, expected_ids=expected, force=True)
            summary["submission"] = str(submission_path)
            log.info("submission written to %s", submission_path)
    if predict_seconds is not None:
        summary["predict_seconds"] = predict_seconds
    summary["seconds"] = time.perf_counter() - start
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if recipe.stage("adapt") is not None:
        activations.record_after_run(run_dir)
    report = write_report(run_dir, recipe, summary, index, ctx.tracker)
    log.info("report: %s", report)


def load_recipe_dataset(recipe: Recipe) -> DatasetIndex:
    """The recipe's dataset, with its holdout split carved out when it asks for one."""
    ds = recipe.dataset
    index = load_dataset(ds.name, ds.root, ds.options, integrity=ds.integrity)
    if ds.holdout > 0:
        index = with_holdout(index, ds.train_split, ds.holdout, recipe.seed)
    return index


def _check_splits(recipe: Recipe, index: DatasetIndex) -> None:
    """Fail before any training if a split the recipe needs is absent or unlabelled."""
    for field_name, split in (("dataset.train_split", recipe.dataset.train_split),
                              ("dataset.val_split", recipe.dataset.val_split),
                              ("evaluate.split", recipe.evaluate.split)):
        if split not in index.splits:
            raise ValueError(f"{field_name}: dataset {index.name!r} has no split {split!r} "
                             f"(it has: {', '.join(index.splits)})")
        if not index.is_labelled(split):
            raise ValueError(f"{field_name}: split {split!r} of {index.name!r} has no labels")
    for i, stage in enumerate(recipe.stages):
        if stage.data_split is not None and stage.data_split not in index.splits:
            raise ValueError(f"stages[{i}].data_split: dataset {index.name!r} has no split "
                             f"{stage.data_split!r} (it has: {', '.join(index.splits)})")
        if stage.data_split and stage.method == "finetune" and not index.is_labelled(stage.data_split):
            raise ValueError(f"stages[{i}].data_split: split {stage.data_split!r} has no labels; "
                             "fine-tuning needs them (method bn_stats or frechet does not)")
    if recipe.predict is not None and recipe.predict.split not in index.splits:
        raise ValueError(f"predict.split: dataset {index.name!r} has no split "
                         f"{recipe.predict.split!r} (it has: {', '.join(index.splits)})")


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
    from fgvc.recipes.schema import read_yaml

    saved = run_dir / "recipe.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a fgvc run folder (no recipe.yaml)")
    data = apply_overrides(read_yaml(saved.read_text(), str(saved)), overrides, str(saved))
    data["predict"] = data.get("predict") or {}
    recipe = parse_recipe(data, str(saved))
    weights = run_dir / "checkpoints" / f"{recipe.stages[-1].name}.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: the run has not finished its last stage "
                                "(fgvc run --resume finishes it)")
    cfg = recipe.predict
    resolutions = cfg.resolutions or [recipe.final_resolution]
    out = out or run_dir / f"predictions-{cfg.split}-{cfg.crops}-{'-'.join(map(str, resolutions))}"
    device, env = _device_and_processes(recipe)
    if env.is_main:
        check_output_path(out)
        check_writable(out, force)
    index = main_first(lambda: load_recipe_dataset(recipe))
    model_cfg = dataclasses.replace(recipe.model, pretrained="none", weights=None)
    model = create_model(model_cfg, index.num_classes).to(device)
    load_model_state(model, load_checkpoint(weights)["model"])
    ctx = RunContext(recipe, run_dir, index, model, data_config(model, recipe.model), device)
    preds = predict_split(ctx)
    if env.is_main:
        preds.save(out)
    barrier()
    return out, preds
