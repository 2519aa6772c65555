"""``fgvc validate``: the resolved plan of a recipe, shown without touching data or weights.

The model is built on PyTorch's meta device (no memory, no compute), so adaptation groups
resolve to the real module paths even for the largest architectures in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fgvc.datasets import registry
from fgvc.engine.freeze import apply_requires_grad, count_parameters, plan_trainable
from fgvc.recipes.recipe import EnsembleRecipe, Recipe


def _meta_model(recipe: Recipe, num_classes: int) -> torch.nn.Module:
    """Built on the meta device and tried at every resolution the recipe uses."""
    from fgvc.models.resolution import check_resolutions, meta_model

    model = meta_model(recipe.model, num_classes)
    sizes = [s.resolution for s in recipe.stages] + list(recipe.eval_resolutions)
    if recipe.predict is not None:
        sizes += recipe.predict.resolutions or []
    check_resolutions(model, recipe.model.arch, sizes)
    return model


def describe_plan(recipe: Recipe) -> str:
    known = registry.get(recipe.dataset.name).num_classes(recipe.dataset.options)
    num_classes = known or 1000
    model = _meta_model(recipe, num_classes)
    weights = recipe.model.weights or (
        "ImageNet (downloaded)" if recipe.model.pretrained == "imagenet" else "random init")
    lines = [
        f"run {recipe.name!r} -> {recipe.run_dir}/ on device {recipe.device}",
        f"dataset {recipe.dataset.name} at {recipe.dataset.root} "
        f"({f'{known} classes' if known else 'classes counted at run time; counts below assume 1000'}), "
        f"train split {recipe.dataset.train_split!r}, val split {recipe.dataset.val_split!r}",
        f"model {recipe.model.arch}, {count_parameters(model):,} parameters, weights: {weights}",
        "stages:",
    ]
    for i, stage in enumerate(recipe.stages, start=1):
        plan = plan_trainable(model, stage.trainable)
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
        if not plan.everything:
            lines.append("     eval mode everywhere else; BN statistics re-estimated only inside "
                         f"the adapted modules (momentum {stage.bn_momentum})")
        lines += adapt_method_lines(recipe, stage)
    lines.append(f"evaluate: {recipe.evaluate.split} split at "
                 f"{', '.join(map(str, recipe.eval_resolutions))} px, {recipe.evaluate.crops} crops, "
                 "before and after adaptation")
    outputs = [f"{recipe.run_dir}/{{recipe.yaml, metrics.jsonl, checkpoints/, evaluation.json, "
               "report.md, accuracy_vs_resolution.png}"]
    if recipe.predict is not None:
        res = recipe.predict.resolutions or [recipe.final_resolution]
        outputs.append(f"predictions of split {recipe.predict.split!r} at "
                       f"{', '.join(map(str, res))} px, {recipe.predict.crops} crops -> "
                       f"{recipe.run_dir}/predictions/")
    if recipe.submission_path is not None:
        outputs.append(f"submission ({recipe.submission.format}"
                       f"{f', top-{recipe.submission.top_k}' if recipe.submission.top_k else ''}) "
                       f"-> {recipe.submission_path}")
    lines.append("outputs:")
    lines += [f"  {o}" for o in outputs]
    lines += [f"warning: {w}" for w in resolution_warnings(recipe)]
    return "\n".join(lines)


def adapt_method_lines(recipe: Recipe, stage) -> list[str]:
    """What a non-default adapt stage does (method, data, preset, re-estimated-only modules)."""
    out = []
    if stage.preset:
        out.append(f"     preset {stage.preset} (fgvc.recipes.presets): SGD lr {stage.optimizer.lr:g}, "
                   f"weight decay on every parameter: {stage.optimizer.decay_all}")
    if stage.reestimate:
        out.append(f"     BN statistics re-estimated, parameters frozen: {', '.join(stage.reestimate)}")
    if stage.method != "finetune" or stage.data_split:
        split = stage.data_split or recipe.dataset.train_split
        what = {"finetune": "fine-tuning with labels",
                "bn_stats": "BN statistics only, no loss, no labels",
                "frechet": "Fréchet fit of the pooled activations, affine map after pooling"}
        out.append(f"     method {stage.method}: {what[stage.method]}, on split {split!r}"
                   + (" (transductive)" if split in (recipe.evaluate.split,
                                                      getattr(recipe.predict, "split", None))
                      else ""))
    return out


def resolution_warnings(recipe: Recipe) -> list[str]:
    """Resolutions that are not multiples of 32: allowed, but the paper (appendix B) measured
    accuracy drops there, at the borders of the last feature map."""
    found: dict[str, int] = {}
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
    return [f"{where} = {r} is not a multiple of 32; the paper (appendix B) saw accuracy drop "
            "between multiples of 32 (allowed, not refused)"
            for where, r in found.items() if r % 32]


def describe_ensemble(recipe: EnsembleRecipe, source: Path | None = None) -> str:
    """The members (each member recipe validated with its overrides) and the outputs."""
    from fgvc.workflows.ensemble_run import load_member

    lines = [f"ensemble {recipe.name!r} of {len(recipe.members)} member(s), combined by "
             f"{recipe.combine} -> {recipe.run_dir}/predictions/"]
    for i, member in enumerate(recipe.members, start=1):
        if member.predictions is not None:
            lines.append(f"  {i}. predictions {member.predictions} (weight {member.weight:g})")
            continue
        sub = load_member(recipe, member, source)
        train, adapt = sub.stage("train"), sub.stage("adapt")
        res = " -> ".join(str(s.resolution) for s in (train, adapt) if s is not None)
        predict = sub.predict
        lines.append(f"  {i}. {member.recipe} (weight {member.weight:g}): {sub.model.arch}, "
                     f"{res} px, predicts at {predict.resolutions or [sub.final_resolution]} px "
                     f"with {predict.crops} -> {sub.run_dir}/predictions/")
    if recipe.submission_path is not None:
        lines.append(f"submission ({recipe.submission.format}) -> {recipe.submission_path}")
    return "\n".join(lines)
