"""The Python API for notebooks: run a recipe, load a finished run, predict with it.

    import fgvc
    run = fgvc.run("quickstart", stages__train__epochs=4)  # '__' stands for '.'
    run.metrics["evaluation"]["after_adaptation"]["80"]["top1"]
    preds = fgvc.predict(run.run_dir, ["a.jpg", "b.jpg"], crops="ten_crop")
    preds.top_k(3, scores=True, names=True)   # [[("class name", 0.91), ...], ...]
    fgvc.predict("runs/quickstart", "photos/")  # a folder (walked) or a glob: "photos/*.jpg"
    fgvc.export("runs/quickstart", "onnx")  # runs/quickstart/export-onnx-80/, at K_test

The same code paths as the ``fgvc`` command: a run made here is an ordinary run folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fgvc.recipes.recipe import EnsembleRecipe, Recipe, load_recipe, parse_recipe

if TYPE_CHECKING:
    import torch

    from fgvc.inference.predictions import Predictions
    from fgvc.transforms import DataConfig
    from fgvc.workflows.export import ExportResult
    from fgvc.workflows.launch import Launched


def _overrides_to_data(data: dict, overrides: dict[str, Any], source: str) -> dict:
    """``stages__train__epochs=4`` or ``{"stages.train.epochs": 4}`` set on plain recipe data;
    values are taken as given (not parsed as YAML, unlike ``--set``)."""
    from fgvc.recipes.recipe import _set_path
    from fgvc.recipes.schema import SchemaError

    problems = []
    for key, value in overrides.items():
        parts = key.replace("__", ".").split(".")
        error = _set_path(data, parts, value)
        if error:
            problems.append(f"override {key!r}: {error}")
    if problems:
        raise SchemaError(problems, source)
    return data


def _recipe_of(recipe_or_path: str | Path | dict | Recipe, overrides: dict[str, Any]
               ) -> tuple[Recipe | EnsembleRecipe, Path | None]:
    if isinstance(recipe_or_path, (Recipe, EnsembleRecipe)):
        data, source, path = recipe_or_path.to_dict(), f"recipe {recipe_or_path.name}", None
    elif isinstance(recipe_or_path, dict):
        data, source, path = dict(recipe_or_path), "recipe (dict)", None
    else:
        from fgvc.recipes.library import resolve_recipe

        path = resolve_recipe(recipe_or_path)  # a file, or a shipped name such as "quickstart"
        if not overrides:
            return load_recipe(path), path
        load_recipe(path)  # a missing or invalid file fails here, with load_recipe's message
        data, source = yaml.safe_load(path.read_text()), str(path)
    import copy

    data = _overrides_to_data(copy.deepcopy(data), overrides, source)
    return parse_recipe(data, source), path


@dataclass
class Run:
    """A finished run, ready to predict: the model (eval mode, CPU), its test transform at the
    final resolution, the class order, and every metric the run wrote."""

    run_dir: Path
    recipe: Recipe
    model: torch.nn.Module
    transform: Any  # PIL image -> (crops, 3, K, K) tensor
    data_config: DataConfig
    resolution: int
    class_ids: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    # The dataset's class names in ``class_ids`` order, from the run's summary.json; a run
    # written before summaries carried them has its category ids here instead.
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = saved_class_names(self.metrics.get("summary") or {},
                                                 self.class_ids)


def saved_class_names(summary: dict, class_ids: list[str]) -> list[str]:
    """The names a run saved (``summary.json``'s ``class_names``) when they belong to these
    category ids, else the ids themselves (runs written before names were saved)."""
    names, ids = summary.get("class_names"), summary.get("category_ids")
    if (isinstance(names, list) and len(names) == len(class_ids)
            and (ids is None or [str(c) for c in ids] == class_ids)):
        return [str(n) for n in names]
    return list(class_ids)


def run(recipe_or_path: str | Path | dict | Recipe, *, resume: bool = False, force: bool = False,
        **overrides: Any) -> Run | Path:
    """Run a recipe (a YAML path, a shipped name, plain data or a Recipe) with keyword overrides, as
    ``fgvc run`` does; returns the loaded :class:`Run` (an ensemble recipe: its folder).

    The console shows the run's progress lines as the command's does, unless the caller
    configured logging (then it shows what that configuration lets through); the run's
    log.txt has them all either way (fgvc/logs.py)."""
    started = time.perf_counter()  # the report's run time is this call's wall time
    recipe, path = _recipe_of(recipe_or_path, overrides)
    if isinstance(recipe, EnsembleRecipe):
        from fgvc.workflows.ensemble_run import run_ensemble

        return run_ensemble(recipe, path, force=force)
    from fgvc.workflows.pipeline import run_recipe

    return load_run(run_recipe(recipe, resume=resume, force=force, started=started))


def launch(recipe_or_path: str | Path | dict | Recipe, *, executor: str = "slurm",
           nodes: int = 1, gpus_per_node: int = 1, cpus_per_task: int = 10,
           time: str = "24:00:00", partition: str | None = None, account: str | None = None,
           resume: bool = False, **overrides: Any) -> Launched:
    """Submit a run as a SLURM job (``executor="local"``: on this machine) through submitit, as
    ``fgvc launch`` does; returns at once with the job (``.job``), its id, log paths and run
    folder. Pre-empted, the job checkpoints and requeues itself. Needs ``fgvc[slurm]``."""
    from fgvc.workflows.launch import JobResources
    from fgvc.workflows.launch import launch as submit

    recipe, _ = _recipe_of(recipe_or_path, overrides)
    resources = JobResources(executor=executor, nodes=nodes, gpus_per_node=gpus_per_node,
                             cpus_per_task=cpus_per_task, time=time, partition=partition,
                             account=account)
    return submit(recipe, resources, resume=resume)


def load_run(run_dir: str | Path, crops: str = "center") -> Run:
    """A finished run folder as a :class:`Run`; its last stage's checkpoint must exist."""
    from fgvc.engine.adapt_methods import load_model_state
    from fgvc.engine.checkpoint import load_checkpoint
    from fgvc.inference.tta import MultiCrop
    from fgvc.models import create_model, data_config
    from fgvc.runfolder import RunFolder

    folder = RunFolder.open(run_dir)
    run_dir = folder.path
    recipe = folder.read_recipe()
    weights = folder.final_weights(recipe)
    state = load_checkpoint(weights)
    class_ids = [str(c) for c in state["category_ids"]]
    cfg = dataclasses.replace(recipe.model, pretrained="none", weights=None)
    model = create_model(cfg, len(class_ids))
    load_model_state(model, state["model"], weights)
    model.eval()
    data_cfg = data_config(model, recipe.model)
    metrics = {"evaluation": folder.read_evaluation(), "summary": folder.read_summary(),
               "epochs": folder.metric_rows()}
    resolution = recipe.final_resolution
    return Run(run_dir, recipe, model, MultiCrop(resolution, data_cfg, crops), data_cfg,
               resolution, class_ids, metrics)


def export(run_or_dir: Run | str | Path, format: str = "onnx", *, resolution: int | None = None,
           out: str | Path | None = None, force: bool = False, tolerance: float | None = None,
           push: str | None = None) -> ExportResult:
    """Export a finished run's network (``onnx``, ``torchscript`` or ``timm``) at its adapted
    resolution (or ``resolution``), with ``preprocess.json``, ``classes.json`` and a model card,
    into ``out`` (default ``RUN/export-<format>-<K>``), as ``fgvc export`` does; the written
    model is checked against the network (``tolerance``, default 1e-4) before it is kept."""
    from fgvc.workflows.export import DEFAULT_TOLERANCE, check_request, export_run

    run_dir = run_or_dir.run_dir if isinstance(run_or_dir, Run) else run_or_dir
    request = check_request(run_dir, format, resolution=resolution, out=out, force=force,
                            push=push)
    loaded = run_or_dir if isinstance(run_or_dir, Run) else load_run(run_dir)
    return export_run(loaded, request,
                      DEFAULT_TOLERANCE if tolerance is None else tolerance)


def predict(run_or_dir: Run | str | Path, images_or_split: str | Path | Sequence[Any], *,
            resolutions: Sequence[int] | None = None, crops: str = "center",
            average: str = "probs", batch_size: int = 32, device: str = "auto",
            num_workers: int | None = None) -> Predictions:
    """Class probabilities from a finished run, or from an ``fgvc export`` folder (its saved
    test DA and resolution, one centre crop; ONNX through onnxruntime).

    ``images_or_split``: a split name of the run's dataset (``"test"``: a bare word that names
    no file or folder), or images: a file, a folder (walked for image files, sorted), a glob
    (``"photos/*.jpg"``), or a list of those and/or PIL images. Probabilities are averaged over
    ``resolutions`` (default: the run's final one) and combined over ``crops`` (``center``,
    ``center_flip``, ``ten_crop``). ``num_workers`` decode files in parallel (default: up to 4
    when there is more than one batch of files).

    Image files that cannot be decoded are left out, as ``fgvc predict --images`` leaves them
    out: one warning names them, ``meta["unreadable"]`` lists them, and the ids (the paths) say
    which images the rows are; no readable image at all is an error. The result knows the
    run's class names: ``top_k(k, scores=True, names=True)``.
    """

    from fgvc.inference.exported import is_export_folder, predict_exported

    if not isinstance(run_or_dir, Run) and is_export_folder(run_or_dir):
        return predict_exported(run_or_dir, images_or_split,
                                resolutions=resolutions, crops=crops, batch_size=batch_size,
                                device=device)
    from fgvc.engine.device import pick_device, set_precision
    from fgvc.inference.image_files import expand_inputs, looks_like_glob

    loaded = run_or_dir if isinstance(run_or_dir, Run) else load_run(run_or_dir)
    torch_device = pick_device(device)
    set_precision(loaded.recipe.precision, torch_device)
    loaded.model.to(torch_device)
    resolutions = list(resolutions or [loaded.resolution])
    if (isinstance(images_or_split, str) and not Path(images_or_split).exists()
            and not looks_like_glob(images_or_split) and "/" not in images_or_split):
        return _predict_split(loaded, images_or_split, resolutions, crops, average, batch_size,
                              torch_device)
    items = expand_inputs([images_or_split] if isinstance(images_or_split, (str, Path))
                          else images_or_split)
    return _predict_images(loaded, items, resolutions, crops, average, batch_size, num_workers,
                           torch_device)


class _Batches:
    """A DataLoader of ``collate_items`` batches as ``forward_batches`` takes them, noting the
    unreadable items in ``unreadable`` (position -> reason) on the way."""

    def __init__(self, loader: Any, unreadable: dict[int, str]) -> None:
        self.loader, self.unreadable = loader, unreadable

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, indices, n_bad, bad in self.loader:
            self.unreadable.update(bad)
            yield images, labels, indices, n_bad


def _predict_images(loaded: Run, items: list, resolutions: list[int], crops: str, average: str,
                    batch_size: int, num_workers: int | None, device) -> Predictions:
    """Files and PIL images through the run's model at each resolution (test transform: resize
    to K / crop_pct, the crops); the unreadable files are left out and named once."""
    import logging
    import os

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from fgvc.datasets.decode import decode_options
    from fgvc.engine.loop import forward_batches
    from fgvc.inference.ensemble import mean_of
    from fgvc.inference.image_files import (
        ImageFilesError,
        ImageItems,
        Unreadable,
        collate_items,
        describe_unreadable,
        unreadable_message,
    )
    from fgvc.inference.predictions import Predictions
    from fgvc.inference.tta import MultiCrop

    if num_workers is None:
        files_only = all(isinstance(item, Path) for item in items)
        num_workers = min(4, os.cpu_count() or 1) if files_only and len(items) > batch_size else 0
    decode = decode_options(loaded.recipe.dataset)
    unreadable: dict[int, str] = {}
    per_resolution, rows = [], None
    for res in resolutions:
        dataset = ImageItems(items, MultiCrop(res, loaded.data_config, crops), decode)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=collate_items)
        parts = list(forward_batches(loaded.model, _Batches(loader, unreadable), device,
                                     average=average, channels_last=False,
                                     desc=f"predict images @{res} px"))
        if not parts:
            break
        order = torch.cat([i for _, _, i in parts]).numpy()
        probs = torch.cat([p for p, _, _ in parts]).numpy().astype(np.float32)
        if rows is not None and not np.array_equal(order, rows):
            raise RuntimeError("predict: the readable images differ between resolutions")
        rows = order
        per_resolution.append(probs)
    ids = [str(item) if isinstance(item, Path) else f"image{i}" for i, item in enumerate(items)]
    failed = [Unreadable(ids[i], reason) for i, reason in sorted(unreadable.items())]
    if not per_resolution:
        raise ImageFilesError(f"none of the {len(items)} image(s) could be read: "
                              f"{describe_unreadable(failed)}")
    if failed:
        logging.getLogger(__name__).warning(unreadable_message(failed, len(items)))
    return Predictions(ids=[ids[i] for i in rows], class_ids=list(loaded.class_ids),
                       probs=mean_of(per_resolution, average), class_names=list(loaded.class_names),
                       meta={"run": loaded.run_dir.name, "resolutions": resolutions,
                             "crops": crops, "average": average, "images": len(items),
                             "unreadable": [dataclasses.asdict(f) for f in failed]})


def _predict_split(loaded: Run, split: str, resolutions: list[int], crops: str, average: str,
                   batch_size: int, device) -> Predictions:
    from fgvc.engine.context import RunContext
    from fgvc.recipes.splits import load_recipe_dataset
    from fgvc.workflows.pipeline import predict_split

    recipe = loaded.recipe
    cfg = dataclasses.replace(recipe.predict or recipe.evaluate, split=split,
                              resolutions=resolutions, crops=crops, average=average,
                              batch_size=batch_size)
    index = load_recipe_dataset(recipe)
    ctx = RunContext(recipe, loaded.run_dir, index, loaded.model, loaded.data_config, device)
    return dataclasses.replace(predict_split(ctx, cfg), class_names=list(loaded.class_names) or None)
