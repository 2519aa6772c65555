"""``fgvc validate``: the resolved plan of a recipe, shown without opening an image or weights.

The model is built on PyTorch's meta device (no memory, no compute), so adaptation groups
resolve to the real module paths even for the largest architectures in a fraction of a second.
When the dataset is on disk its metadata is read, to check the splits the recipe names.

Paths: every relative path in a recipe (``dataset.root``, ``model.weights``, ``output_root``,
``submission.path``, an ensemble's member ``recipe`` and ``predictions``) is relative to the
working directory fgvc runs in, never to the recipe file; the plan prints them resolved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fgvc.datasets import registry
from fgvc.engine.freeze import apply_requires_grad, count_parameters, plan_trainable
from fgvc.recipes.presets import describe_official
from fgvc.recipes.recipe import EnsembleRecipe, Recipe, load_member
from fgvc.recipes.training import adapt_warnings, describe_training_options


def _meta_model(recipe: Recipe, num_classes: int) -> torch.nn.Module:
    """Built on the meta device and tried at every resolution the recipe uses."""
    from fgvc.models.resolution import check_resolutions, meta_model

    model = meta_model(recipe.model, num_classes)
    sizes = [s.resolution for s in recipe.stages] + list(recipe.eval_resolutions)
    if recipe.predict is not None:
        sizes += recipe.predict.resolutions or []
    check_resolutions(model, recipe.model.arch, sizes)
    return model


def resolved(path: str | Path) -> Path:
    """The one rule for relative recipe paths: relative to the working directory."""
    return Path(path).absolute()


def _weights_text(recipe: Recipe) -> str:
    if recipe.model.weights:
        found = "" if resolved(recipe.model.weights).is_file() else " (NOT FOUND)"
        return f"{resolved(recipe.model.weights)}{found}"
    if recipe.model.pretrained == "imagenet":
        return ("ImageNet, will be downloaded on first use (timm / pretrainedmodels cache; "
                "offline, give model.weights: FILE)")
    return "random initialisation (pretrained: none)"


def _dataset_text(recipe: Recipe, known: int | None, read_data: bool = True
                  ) -> tuple[str, list[str]]:
    """What validate can say about the data without decoding an image, and what on disk would
    stop the run: a missing root, metadata that cannot be read, a split the recipe names that
    the dataset lacks (fgvc/recipes/splits.py, the checks ``fgvc run`` makes)."""
    ds = recipe.dataset
    root = resolved(ds.root)
    classes = f"{known} classes" if known else "classes counted at run time; counts below assume 1000"
    if not read_data:
        return f"dataset {ds.name} at {root} ({classes}): not checked (--no-data)", []
    if ds.name == "synthetic" and not (root / "meta.json").is_file():
        return f"dataset synthetic at {root} ({classes}): will be generated there on first run", []
    if not root.exists():
        return (f"dataset {ds.name} at {root} ({classes}): NOT FOUND on disk",
                [f"dataset.root: {root} does not exist; put the {ds.name} data there or set "
                 f"dataset.root (`fgvc datasets card {ds.name}` says where to get it and the "
                 "layout; `fgvc validate --no-data` checks the recipe alone)"])
    from fgvc.recipes.splits import load_recipe_dataset, split_problems

    try:
        index = load_recipe_dataset(recipe)
        splits = {k: (len(v), index.is_labelled(k)) for k, v in index.splits.items()}
    except Exception as err:  # noqa: BLE001 - shown, not raised: validate reports, run refuses
        return (f"dataset {ds.name} at {root} ({classes}): cannot be read",
                [f"dataset.root: {str(err).strip() or repr(err)}"])
    shown = ", ".join(f"{k} {n:,}{'' if labelled else ' (unlabelled)'}"
                      for k, (n, labelled) in splits.items())
    return (f"dataset {ds.name} at {root} ({classes}): splits {shown}",
            split_problems(recipe, index))


def _weights_problems(recipe: Recipe) -> list[str]:
    if recipe.model.weights and not resolved(recipe.model.weights).is_file():
        return [f"model.weights: {resolved(recipe.model.weights)} not found (a checkpoint file: "
                ".pth, .pt or .safetensors)"]
    return []


def describe_plan(recipe: Recipe, problems: list[str] | None = None,
                  read_data: bool = True) -> str:
    """The plan as text; ``problems`` (when given) receives what would stop the run.
    ``read_data=False`` (``validate --no-data``) judges the recipe alone: nothing on disk is
    read, so a missing dataset or weights file is no problem."""
    known = registry.get(recipe.dataset.name).num_classes(recipe.dataset.options)
    num_classes = known or 1000
    model = _meta_model(recipe, num_classes)
    data_line, found = _dataset_text(recipe, known, read_data)
    if read_data:
        found += _weights_problems(recipe)
    if problems is not None:
        problems.extend(found)
    lines = [
        f"run {recipe.name!r} -> {resolved(recipe.run_dir)}/ on device {recipe.device}, "
        f"precision {recipe.precision}",
        data_line,
        f"  train split {recipe.dataset.train_split!r}, val split {recipe.dataset.val_split!r}"
        + (f" (a {recipe.dataset.holdout:g} holdout of the train split)" if recipe.dataset.holdout
           else ""),
        f"model {recipe.model.arch}, {count_parameters(model):,} parameters, weights: "
        f"{_weights_text(recipe)}"
        f"{', torch.compile (eager where unsupported)' if recipe.model.compile else ''}",
        "stages:",
    ]
    for i, stage in enumerate(recipe.stages, start=1):
        plan = plan_trainable(model, stage.trainable, stage.reestimate)
        apply_requires_grad(model, plan)
        what = "all modules" if plan.everything else "; ".join(
            f"{group} -> {', '.join(paths)}" for group, paths in plan.groups.items())
        opt = stage.optimizer
        lines += [
            f"  {i}. {stage.name}: {stage.epochs} epoch(s) at {stage.resolution} px, augment "
            f"{stage.augment}, batch {stage.batch_size}, {opt.name} lr {opt.lr:g} "
            f"({stage.schedule.name}, warm-up {stage.schedule.warmup_epochs:g} epoch(s))",
            f"     trainable: {what} ({count_parameters(model, trainable_only=True):,} "
            "parameters)",
        ]
        if plan.reestimate:
            lines.append("     in train mode, not trained (BN statistics re-estimated, dropout "
                         "active): " + "; ".join(f"{group} -> {', '.join(paths)}"
                                                 for group, paths in plan.reestimate.items()))
        if not plan.everything:
            how = ("an exact average over the adaptation batches (reset first)"
                   if stage.bn_momentum is None
                   else f"a running average, momentum {stage.bn_momentum:g}")
            lines.append("     eval mode everywhere else; BN statistics re-estimated only inside "
                         f"the adapted modules, as {how}")
        lines += [f"     {option}" for option in describe_training_options(stage)]
        lines += [f"     warning: {w}" for w in adapt_warnings(stage)]
        lines += albumentations_lines(stage)
        lines += adapt_method_lines(recipe, stage)
        _check_stage_runtime(model, stage)
    keep = recipe.checkpoint
    lines.append(f"checkpoint: each stage ends with the {keep.keep} epoch's weights"
                 + (f" by {keep.metric} (kept beside the last)" if keep.keep == "best" else ""))
    adapted = recipe.stage("adapt") is not None
    lines.append(f"evaluate: {recipe.evaluate.split} split at "
                 f"{', '.join(map(str, recipe.eval_resolutions))} px, {recipe.evaluate.crops} crops, "
                 + ("before and after adaptation" if adapted else "no adaptation (no adapt stage)"))
    run_dir = resolved(recipe.run_dir)
    outputs = [f"{run_dir}/{{recipe.yaml, metrics.jsonl, checkpoints/, evaluation.json, "
               "report.md and its PNG figures, tensorboard/}"]
    if recipe.predict is not None:
        res = recipe.predict.resolutions or [recipe.final_resolution]
        outputs.append(f"predictions of split {recipe.predict.split!r} at "
                       f"{', '.join(map(str, res))} px, {recipe.predict.crops} crops -> "
                       f"{run_dir}/predictions/")
    if recipe.submission_path is not None:
        outputs.append(f"submission ({recipe.submission.format}"
                       f"{f', top-{recipe.submission.top_k}' if recipe.submission.top_k else ''}) "
                       f"-> {resolved(recipe.submission_path)}")
    lines.append("outputs:")
    lines += [f"  {o}" for o in outputs]
    lines += [f"warning: {w}" for w in resolution_warnings(recipe, output_stride(model))]
    if recipe.accepted_warnings:
        lines.append(f"accepted warnings (recipe field accepted_warnings): "
                     f"{', '.join(recipe.accepted_warnings)}")
    if found:
        lines.append("problems (the run will refuse to start):")
        lines += [f"  - {p}" for p in found]
    return "\n".join(lines)


def _check_stage_runtime(model: torch.nn.Module, stage) -> None:
    """What only timm can judge, checked before any run: the auto-augment string, whether the
    model numbers its layers for layer decay and whether timm can decay biases and norms for
    ``decay_all`` (raises ValueError naming the field)."""
    from fgvc.engine.optim import layer_decay_groups, parameter_groups
    from fgvc.transforms import DataConfig, build_transform

    if stage.auto_augment:
        build_transform(stage.augment, stage.resolution, DataConfig(),
                        auto_augment=stage.auto_augment)
    opt = stage.optimizer
    if opt.layer_decay is not None:
        layer_decay_groups(model, opt.weight_decay, opt.layer_decay, opt.decay_all)
    elif opt.decay_all:
        parameter_groups(model, opt.weight_decay, opt.decay_all)


def albumentations_lines(stage) -> list[str]:
    """The stage's albumentations pipeline in the plan (built, so a bad one fails here) and its
    FixRes warnings."""
    block = stage.albumentations
    if block is None:
        return []
    from fgvc.transforms import albumentations_step, albumentations_warnings

    step = albumentations_step(block.pipeline, block.position, stage.resolution,
                               where=f"stage {stage.name}: albumentations")
    names = [type(t).__name__ for t in step.compose.transforms]
    source = block.pipeline if isinstance(block.pipeline, str) else "inline"
    return ([f"     albumentations ({source}, {block.position.replace('_', ' ')}): "
             f"{', '.join(names)}"]
            + [f"     warning: {w}" for w in albumentations_warnings(step)])


def adapt_method_lines(recipe: Recipe, stage) -> list[str]:
    """What a non-default adapt stage does (method, data, preset, re-estimated-only modules)."""
    out = []
    if stage.preset:
        branch, *notes = describe_official(recipe.model.arch, recipe.model.drop_rate)
        out.append(f"     {branch}; SGD lr {stage.optimizer.lr:g}, weight decay on biases and "
                   f"norms too: {stage.optimizer.decay_all}")
        out += [f"     warning: {note}" for note in notes]
    if stage.method != "finetune" or stage.data_split:
        split = stage.data_split or recipe.dataset.train_split
        what = {"finetune": "fine-tuning with labels",
                "bn_stats": "BN statistics only, no loss, no labels",
                "frechet": "Fréchet fit of the pooled activations, affine map after pooling",
                "gaussian": "per-channel Gaussians before the last ReLU, affine map there"}
        out.append(f"     method {stage.method}: {what[stage.method]}, on split {split!r}"
                   + (" (transductive)" if split in (recipe.evaluate.split,
                                                      getattr(recipe.predict, "split", None))
                      else ""))
    return out


def output_stride(model: torch.nn.Module) -> int:
    """The input pixels per cell of the network's last feature map (or token grid): 32 for
    ResNets and ConvNeXts, the patch size for ViTs (8, 14, 16); 32 where timm does not say."""
    info = getattr(model, "feature_info", None)
    try:
        return int(info[-1]["reduction"]) if info else 32
    except (KeyError, TypeError, IndexError, ValueError):
        return 32


# A size off the grid is flagged only when a size on it lies this close (relative): rounding to
# it then costs little apparent object size. Further away (small images: the quickstart's 80 px,
# 20 % from 64 and 96) rounding would move objects' apparent size by more than FixRes's own
# resolution step, and the quickstart's measured 80 px beats both neighbours (the five-seed table
# in docs/getting-started.md).
GRID_NEAR = 0.10


def resolution_warnings(recipe: Recipe, grid: int = 32) -> list[str]:
    """Resolutions off the network's grid (``grid``: its output stride, ``output_stride``)
    with a size on it within ``GRID_NEAR``: allowed, but the paper (appendix B) measured
    accuracy drops between multiples of 32 for its CNNs, where the last feature map covers
    the image unevenly."""
    found: dict[str, int] = {}
    if "off_grid" in recipe.accepted_warnings:
        return []
    for i, stage in enumerate(recipe.stages):
        found[f"stages[{i}].resolution"] = stage.resolution
        if stage.reference_resolution:
            found[f"stages[{i}].reference_resolution"] = stage.reference_resolution
    for section in ("evaluate", "predict"):
        cfg = getattr(recipe, section)
        for i, r in enumerate(getattr(cfg, "resolutions", None) or []):
            found[f"{section}.resolutions[{i}]"] = r
    for i, r in enumerate(recipe.sweep_resolutions or []):
        found[f"sweep_resolutions[{i}]"] = r
    out = []
    for where, r in found.items():
        nearest = max(grid, grid * round(r / grid))
        if r % grid and abs(nearest - r) <= GRID_NEAR * r:
            out.append(f"{where} = {r} is not a multiple of {grid} (the network's output "
                       f"stride), {nearest} is: the paper (appendix B) saw accuracy drop between "
                       "multiples of 32 (allowed, not refused)")
    return out


def describe_ensemble(recipe: EnsembleRecipe, source: Path | None = None) -> str:
    """The members (each member recipe validated with its overrides) and the outputs."""
    lines = [f"ensemble {recipe.name!r} of {len(recipe.members)} member(s), combined by "
             f"{recipe.combine} -> {resolved(recipe.run_dir)}/predictions/"]
    for i, member in enumerate(recipe.members, start=1):
        if member.predictions is not None:
            lines.append(f"  {i}. predictions {resolved(member.predictions)} (weight {member.weight:g})")
            continue
        sub = load_member(recipe, member, source)
        train, adapt = sub.stage("train"), sub.stage("adapt")
        res = " -> ".join(str(s.resolution) for s in (train, adapt) if s is not None)
        predict = sub.predict
        lines.append(f"  {i}. {resolved(member.recipe)} (weight {member.weight:g}): "
                     f"{sub.model.arch}, {res} px, predicts at "
                     f"{predict.resolutions or [sub.final_resolution]} px with {predict.crops} -> "
                     f"{resolved(sub.run_dir)}/predictions/")
    if recipe.submission_path is not None:
        lines.append(f"submission ({recipe.submission.format}) -> {resolved(recipe.submission_path)}")
    return "\n".join(lines)
