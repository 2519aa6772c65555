"""What is left of a run after a training epoch, as passes over images (``progress.Work``), so
that the epoch line's run ETA covers the whole run: the stage's other epochs and validations,
the later stages, the evaluations before and after adaptation, the per-image predictions on the
evaluation split and the test predictions.

The passes mirror what run_recipe (workflows/pipeline.py) and run_stage do, with their savings:

- the evaluation reuses the last validation at the stage's resolution (evaluation_cache.py);
- an adapt stage that freezes a prefix and sees test DA runs that prefix once over its data
  (feature_cache.py) and then trains only the tail, whose cost is left out;
- after adaptation, the evaluation and the per-image predictions at the resolutions the
  evaluation before it computed run on the activations it kept (kept_activations.py, single
  centre crop), also left out.

Where a saving may not happen (e.g. activations over ``adapt_cache_gb``), the estimate is
optimistic by that pass; where a label-free method is used, its forward passes are counted.
Not priced: the activation statistics at the end of a run with an adapt stage
(workflows/activations.py: 128 images per resolution, before and after adaptation) and the
report, steps of the workflow above this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fgvc.engine.distributed import current
from fgvc.engine.freeze import plan_trainable
from fgvc.inference.tta import CROPS_PER_MODE
from fgvc.progress import Work
from fgvc.recipes.recipe import StageConfig

if TYPE_CHECKING:
    from fgvc.engine.context import RunContext


def _validations(stage: StageConfig, after_epoch: int) -> int:
    """Validations run_stage makes in the epochs after ``after_epoch`` (the last always)."""
    return sum(1 for e in range(after_epoch + 1, stage.epochs + 1)
               if e % stage.validate_every == 0 or e == stage.epochs)


def _tail_only(ctx: RunContext, stage: StageConfig) -> bool:
    """Whether ``stage`` trains only a tail on cached activations (feature_cache.adapt_cache)."""
    return (stage.method == "finetune" and stage.augment == "test" and stage.adapt_cache_gb > 0
            and not current().enabled
            and not plan_trainable(ctx.model, stage.trainable, stage.reestimate).everything)


def _keeps(ctx: RunContext, adapt: StageConfig) -> bool:
    """Whether the evaluation before ``adapt`` will keep activations for the passes after it
    (kept_activations.start_keeping's conditions, less the model-split and size checks)."""
    return (ctx.recipe.evaluate.crops == "center" and adapt.adapt_cache_gb > 0
            and not current().enabled
            and not plan_trainable(ctx.model, adapt.trainable, adapt.reestimate).everything)


def work_left(ctx: RunContext, stage: StageConfig, epochs_done: int, epoch_images: int,
              on_cache: bool = False) -> list[Work]:
    """The passes left after ``epochs_done`` epochs of ``stage`` (each of ``epoch_images``
    training images); ``on_cache``: this stage trains and validates on cached activations."""
    recipe, index = ctx.recipe, ctx.index
    ds, evaluate = recipe.dataset, recipe.evaluate
    n_val = len(index.split(ds.val_split))
    work: list[Work] = []
    if not on_cache:
        work += [Work(epoch_images * (stage.epochs - epochs_done), stage.resolution, True),
                 Work(n_val * _validations(stage, epochs_done), stage.resolution)]
    later = recipe.stages[recipe.stages.index(stage) + 1:]
    adapt = recipe.stage("adapt")
    evaluation_before = adapt is not None and adapt in later
    last_validated = stage.resolution  # the resolution the evaluation may reuse
    before: list[Work] = []  # the evaluation before adaptation
    for s in later:
        if s is adapt:  # the evaluation before adaptation runs first
            before = _evaluation(ctx, last_validated)
            work += before
        n_data = len(index.split(s.data_split or ds.train_split))
        if s.method != "finetune":  # bn_stats / frechet: forward passes over its data
            work.append(Work(n_data * max(1, s.epochs), s.resolution))
        elif _tail_only(ctx, s):  # the prefix once over its data; epochs on the tail
            work.append(Work(n_data, s.resolution))
        else:
            work += [Work(n_data * s.epochs, s.resolution, True),
                     Work(n_val * _validations(s, 0), s.resolution)]
        last_validated = s.resolution
    # After adaptation, the resolutions whose activations the evaluation before it kept (those
    # it computed) run the adapted tail alone; the others run in full.
    kept: set[int] = set()
    if stage is adapt and ctx.kept is not None:
        kept = set(ctx.kept.views)
    elif evaluation_before and _keeps(ctx, adapt):
        kept = {w.resolution for w in before}
    work += [w for w in _evaluation(ctx, last_validated) if w.resolution not in kept]
    if recipe.final_resolution not in kept:  # the per-image predictions
        work.append(Work(len(index.split(evaluate.split)) * CROPS_PER_MODE[evaluate.crops],
                         recipe.final_resolution))
    if recipe.predict is not None:
        predict = recipe.predict
        n_test = len(index.split(predict.split)) * CROPS_PER_MODE[predict.crops]
        work += [Work(n_test, r) for r in predict.resolutions or [recipe.final_resolution]]
    return work


def _evaluation(ctx: RunContext, validated: int) -> list[Work]:
    """One evaluation at every resolution, less the one the last validation already made."""
    recipe, evaluate = ctx.recipe, ctx.recipe.evaluate
    reused = (evaluate.split == recipe.dataset.val_split and evaluate.crops == "center"
              and evaluate.average == "probs")
    images = len(ctx.index.split(evaluate.split)) * CROPS_PER_MODE[evaluate.crops]
    return [Work(images, r) for r in recipe.eval_resolutions if not (reused and r == validated)]
