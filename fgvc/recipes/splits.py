"""Which splits a recipe needs, checked against what a dataset holds: one list of problems that
``fgvc run`` refuses on (fgvc/workflows/pipeline.py) and ``fgvc validate`` lists (plan.py);
and the recipe's dataset as every command reads it, holdout split carved out
(``load_recipe_dataset``).

Each problem names the recipe field, the split, what the dataset has, and the exact field
(and ``--set``) that fixes it, so one pass through the messages fixes the recipe. No torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fgvc.datasets.base import HOLDOUT_SPLIT, DatasetIndex, with_holdout
from fgvc.datasets.registry import load_dataset
from fgvc.suggest import did_you_mean

if TYPE_CHECKING:
    from fgvc.recipes.recipe import Recipe

DEFAULT_HOLDOUT = 0.1


def load_recipe_dataset(recipe: Recipe) -> DatasetIndex:
    """The recipe's dataset, with its holdout split carved out when it asks for one."""
    ds = recipe.dataset
    index = load_dataset(ds.name, ds.root, ds.options, integrity=ds.integrity,
                         follow_symlinks_outside=ds.follow_symlinks_outside)
    if ds.holdout > 0:
        index = with_holdout(index, ds.train_split, ds.holdout, recipe.seed)
    return index


def _labelled(index: DatasetIndex) -> list[str]:
    return [s for s in index.splits if index.is_labelled(s)]


def _missing(field: str, split: str, index: DatasetIndex) -> str:
    return (f"{field}: dataset {index.name!r} has no split {split!r}"
            f"{did_you_mean(split, index.splits)} (it has: {', '.join(index.splits)})")


def _empty(field: str, split: str, index: DatasetIndex) -> str | None:
    """A split the recipe uses that holds no image: a broken copy, never a run on 0 images."""
    if len(index.splits[split]):
        return None
    others = ", ".join(s for s in index.splits if len(index.splits[s]))
    instead = f", or name a split that has images ({others})" if others else ""
    return (f"{field}: split {split!r} of {index.name!r} at {index.root} has no images; fix: "
            f"complete the copy (`fgvc datasets info {index.name} --root {index.root}` shows "
            f"what is there){instead}")


def _val_fix(recipe: Recipe, index: DatasetIndex) -> str:
    """Validate on a held-out slice of the training split, or on a labelled test split."""
    if recipe.dataset.val_split == HOLDOUT_SPLIT and recipe.dataset.holdout <= 0:
        return (f"; the {HOLDOUT_SPLIT!r} split is carved from dataset.train_split only when "
                f"dataset.holdout > 0: set dataset.holdout: {DEFAULT_HOLDOUT:g} (or --set "
                f"dataset.holdout={DEFAULT_HOLDOUT:g})")
    if HOLDOUT_SPLIT in index.splits:  # dataset.holdout > 0 already carves one
        fix = (f"; set dataset.val_split: {HOLDOUT_SPLIT} (or --set "
               f"dataset.val_split={HOLDOUT_SPLIT}): dataset.holdout is "
               f"{recipe.dataset.holdout:g}")
    else:
        fix = (f"; set dataset.val_split: {HOLDOUT_SPLIT} with dataset.holdout: "
               f"{DEFAULT_HOLDOUT:g} (or --set dataset.val_split={HOLDOUT_SPLIT} --set "
               f"dataset.holdout={DEFAULT_HOLDOUT:g})")
    others = [s for s in _labelled(index)
              if s not in (recipe.dataset.train_split, "trainval", HOLDOUT_SPLIT)]
    return fix + "".join(f", or val_split: {s}" for s in others)


def _evaluate_fix(recipe: Recipe, index: DatasetIndex) -> str:
    labelled = [s for s in _labelled(index) if s != recipe.dataset.train_split]
    choices = ([s for s in labelled if s == "test"] + [s for s in labelled if s != "test"])
    if not choices:
        return ""
    return f"; set evaluate.split: {choices[0]} (or --set evaluate.split={choices[0]})"


def _train_fix(index: DatasetIndex) -> str:
    labelled = _labelled(index)
    choice = next((s for s in ("train", "trainval") if s in labelled), labelled[0] if labelled else None)
    if choice is None:
        return ""
    return f"; set dataset.train_split: {choice} (or --set dataset.train_split={choice})"


def _predict_fix(index: DatasetIndex) -> str:
    unlabelled = [s for s in index.splits if not index.is_labelled(s)]
    if unlabelled:
        return f"; set predict.split: {unlabelled[0]} (or --set predict.split={unlabelled[0]})"
    return ("; the dataset has no unlabelled split to predict: set predict: null and "
            "submission: null (its labelled splits are evaluated instead)")


def split_problems(recipe: Recipe, index: DatasetIndex) -> list[str]:
    """Every split the recipe names that the dataset lacks (or that lacks the labels the
    recipe needs), each with the field that fixes it; empty when ``fgvc run`` can start.
    ``index`` is the dataset as the run reads it, holdout split included
    (``load_recipe_dataset``)."""
    ds = recipe.dataset
    out = []
    fixes = {"dataset.train_split": _train_fix(index), "dataset.val_split": _val_fix(recipe, index),
             "evaluate.split": _evaluate_fix(recipe, index)}
    for field, split in (("dataset.train_split", ds.train_split),
                         ("dataset.val_split", ds.val_split),
                         ("evaluate.split", recipe.evaluate.split)):
        if split not in index.splits:
            out.append(_missing(field, split, index) + fixes[field])
        elif _empty(field, split, index):
            out.append(_empty(field, split, index))
        elif not index.is_labelled(split):
            out.append(f"{field}: split {split!r} of {index.name!r} has no labels{fixes[field]}")
    for i, stage in enumerate(recipe.stages):
        if stage.data_split is None:
            continue
        if stage.data_split not in index.splits:
            out.append(_missing(f"stages[{i}].data_split", stage.data_split, index))
        elif _empty(f"stages[{i}].data_split", stage.data_split, index):
            out.append(_empty(f"stages[{i}].data_split", stage.data_split, index))
        elif stage.method == "finetune" and not index.is_labelled(stage.data_split):
            out.append(f"stages[{i}].data_split: split {stage.data_split!r} has no labels; "
                       "fine-tuning needs them (method bn_stats, frechet or gaussian does not)")
    if recipe.predict is not None:
        what = "predict.split" + (" (and so the submission)" if recipe.submission else "")
        if recipe.predict.split not in index.splits:
            out.append(_missing(what, recipe.predict.split, index) + _predict_fix(index))
        elif _empty(what, recipe.predict.split, index):
            out.append(_empty(what, recipe.predict.split, index))
    return out
