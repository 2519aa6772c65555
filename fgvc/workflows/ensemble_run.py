"""``fgvc run`` of an ensemble recipe: run (or reuse) every member, combine their predictions,
write the submission and a short report."""

from __future__ import annotations

import logging
from pathlib import Path

from fgvc.engine.distributed import current
from fgvc.inference.ensemble import COMBINE_TITLES, combine, load_members
from fgvc.inference.predictions import Predictions, find_predictions
from fgvc.inference.submission import check_writable, write_submission
from fgvc.io.atomic import atomic_write
from fgvc.recipes.recipe import EnsembleMember, EnsembleRecipe, load_member
from fgvc.runfolder import RunFolder

log = logging.getLogger(__name__)


def member_predictions(recipe: EnsembleRecipe, member: EnsembleMember, source: Path | None
                       ) -> Path:
    """The member's predictions file: given, reused from a finished run, or produced now
    (resuming the member's run if an earlier attempt stopped half-way)."""
    if member.predictions is not None:
        return Path(member.predictions)
    from fgvc.workflows.pipeline import run_recipe

    member_recipe = load_member(recipe, member, source)
    run_dir = member_recipe.run_dir
    found = find_predictions(run_dir)
    if RunFolder(run_dir).summary_path.exists() and found is not None:
        log.info("member %s: reusing %s", member_recipe.name, found)
        return found
    log.info("member %s: running %s", member_recipe.name, member.recipe)
    run_dir = run_recipe(member_recipe, resume=run_dir.exists())
    return RunFolder(run_dir).predictions_dir


def run_ensemble(recipe: EnsembleRecipe, source: Path | None = None, *,
                 force: bool = False) -> Path:
    """``force`` overwrites the ensemble's submission; finished members are always reused."""
    submission_path = recipe.submission_path
    if submission_path is not None:
        check_writable(submission_path, force)
    paths = [member_predictions(recipe, m, source) for m in recipe.members]
    if not current().is_main:  # under torchrun the members ran sharded; one process combines
        return recipe.run_dir
    members = load_members(paths)
    folder = RunFolder(recipe.run_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_recipe(recipe)
    preds: Predictions = combine(members, [m.weight for m in recipe.members], recipe.combine,
                                 out=folder.predictions_dir)
    lines = [f"# Ensemble `{recipe.name}`", "", f"{len(members)} member(s), combined by "
             f"{COMBINE_TITLES[recipe.combine]} (`combine: {recipe.combine}`), over "
             f"{len(preds.ids)} images and {len(preds.class_ids)} classes.",
             "", "| member | weight | model | resolutions | crops |", "|---|---|---|---|---|"]
    for (name, member), spec in zip(members, recipe.members, strict=True):
        meta = member.meta
        lines.append(f"| `{name}` | {spec.weight:g} | {meta.get('model', '?')} | "
                     f"{meta.get('resolutions', '?')} | {meta.get('crops', '?')} |")
    if submission_path is not None:
        write_submission(preds, submission_path, recipe.submission.format,
                         recipe.submission.top_k, force=True)
        lines += ["", f"Submission: `{submission_path}` ({recipe.submission.format})."]
        log.info("submission written to %s", submission_path)
    atomic_write(folder.report_path, "\n".join(lines) + "\n")
    folder.write_summary({"members": [str(p) for p in paths], "combine": recipe.combine})
    return folder.path
