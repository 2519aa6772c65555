"""The Python API for notebooks: run a recipe, load a finished run, predict with it.

    import fgvc
    run = fgvc.run("recipes/quickstart.yaml", stages__train__epochs=4)  # '__' stands for '.'
    run.metrics["evaluation"]["after_adaptation"]["80"]["top1"]
    preds = fgvc.predict(run.run_dir, ["a.jpg", "b.jpg"], crops="ten_crop")
    preds.top_k(3)

The same code paths as the ``fgvc`` command: a run made here is an ordinary run folder.
"""

from __future__ import annotations

import dataclasses
import json
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
        path = Path(recipe_or_path)
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


def run(recipe_or_path: str | Path | dict | Recipe, *, resume: bool = False, force: bool = False,
        **overrides: Any) -> Run | Path:
    """Run a recipe (a YAML path, plain data or a Recipe) with keyword overrides, as
    ``fgvc run`` does; returns the loaded :class:`Run` (an ensemble recipe: its folder)."""
    recipe, path = _recipe_of(recipe_or_path, overrides)
    if isinstance(recipe, EnsembleRecipe):
        from fgvc.workflows.ensemble_run import run_ensemble

        return run_ensemble(recipe, path, force=force)
    from fgvc.workflows.pipeline import run_recipe

    return load_run(run_recipe(recipe, resume=resume, force=force))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def load_run(run_dir: str | Path, crops: str = "center") -> Run:
    """A finished run folder as a :class:`Run`; its last stage's checkpoint must exist."""
    from fgvc.engine.checkpoint import load_checkpoint
    from fgvc.inference.tta import MultiCrop
    from fgvc.models import create_model, data_config

    run_dir = Path(run_dir)
    saved = run_dir / "recipe.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a fgvc run folder (no recipe.yaml)")
    recipe = parse_recipe(yaml.safe_load(saved.read_text()), str(saved))
    weights = run_dir / "checkpoints" / f"{recipe.stages[-1].name}.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: the run has not finished its last stage "
                                "(fgvc run --resume finishes it)")
    state = load_checkpoint(weights)
    class_ids = [str(c) for c in state["category_ids"]]
    cfg = dataclasses.replace(recipe.model, pretrained="none", weights=None)
    model = create_model(cfg, len(class_ids))
    model.load_state_dict(state["model"])
    model.eval()
    data_cfg = data_config(model, recipe.model)
    metrics_path = run_dir / "metrics.jsonl"
    epochs = ([json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
              if metrics_path.exists() else [])
    metrics = {"evaluation": _read_json(run_dir / "evaluation.json") or {},
               "summary": _read_json(run_dir / "summary.json") or {}, "epochs": epochs}
    resolution = recipe.final_resolution
    return Run(run_dir, recipe, model, MultiCrop(resolution, data_cfg, crops), data_cfg,
               resolution, class_ids, metrics)


def predict(run_or_dir: Run | str | Path, images_or_split: str | Sequence[Any], *,
            resolutions: Sequence[int] | None = None, crops: str = "center",
            average: str = "probs", batch_size: int = 32, device: str = "auto") -> Predictions:
    """Class probabilities from a finished run.

    ``images_or_split``: a split name of the run's dataset (``"test"``), or image files (paths)
    and/or PIL images. Probabilities are averaged over ``resolutions`` (default: the run's final
    one) and combined over ``crops`` (``center``, ``center_flip``, ``ten_crop``).
    """

    from fgvc.engine.device import pick_device, set_precision
    from fgvc.inference.predictions import Predictions
    from fgvc.inference.tta import MultiCrop

    loaded = run_or_dir if isinstance(run_or_dir, Run) else load_run(run_or_dir)
    torch_device = pick_device(device)
    set_precision(loaded.recipe.precision, torch_device)
    model = loaded.model.to(torch_device)
    resolutions = list(resolutions or [loaded.resolution])
    if isinstance(images_or_split, str) and not Path(images_or_split).is_file():
        return _predict_split(loaded, images_or_split, resolutions, crops, average, batch_size,
                              torch_device)
    items = [images_or_split] if isinstance(images_or_split, (str, Path)) else list(images_or_split)
    if not items:
        raise ValueError("predict: no image given")
    ids = [str(item) if isinstance(item, (str, Path)) else f"image{i}" for i, item in enumerate(items)]
    total = None
    for res in resolutions:
        probs = _predict_images(model, items, MultiCrop(res, loaded.data_config, crops), average,
                                batch_size, torch_device)
        total = probs if total is None else total + probs
    return Predictions(ids=ids, class_ids=loaded.class_ids, probs=total / len(resolutions),
                       meta={"run": loaded.run_dir.name, "resolutions": resolutions,
                             "crops": crops, "average": average})


def _predict_images(model, items: list, transform, average: str, batch_size: int, device):
    import numpy as np
    import torch
    from PIL import Image

    from fgvc.datasets.decode import open_rgb
    from fgvc.engine.loop import forward_batches

    def batches():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            images = [open_rgb(Path(x).parent, Path(x).name) if isinstance(x, (str, Path))
                      else x.convert("RGB")
                      for x in chunk]
            if not all(isinstance(im, Image.Image) for im in images):
                raise TypeError("predict: images must be file paths or PIL images")
            indices = torch.arange(start, start + len(chunk))
            yield torch.stack([transform(im) for im in images]), indices * 0, indices, 0

    parts = [p.numpy() for p, _, _ in forward_batches(model, batches(), device, average=average,
                                                       channels_last=False, desc="predict")]
    return np.concatenate(parts).astype(np.float32)


def _predict_split(loaded: Run, split: str, resolutions: list[int], crops: str, average: str,
                   batch_size: int, device) -> Predictions:
    from fgvc.engine.stage import RunContext
    from fgvc.workflows.pipeline import load_recipe_dataset, predict_split

    recipe = loaded.recipe
    cfg = dataclasses.replace(recipe.predict or recipe.evaluate, split=split,
                              resolutions=resolutions, crops=crops, average=average,
                              batch_size=batch_size)
    index = load_recipe_dataset(recipe)
    ctx = RunContext(recipe, loaded.run_dir, index, loaded.model, loaded.data_config, device)
    return predict_split(ctx, cfg)
