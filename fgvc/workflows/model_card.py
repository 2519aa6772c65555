"""The ``README.md`` model card of an export (``fgvc export``): what the network was trained on
and how, its accuracy before and after FixRes adaptation with 95 % intervals, the
preprocessing, how to run the exported file, and the commands that reproduce it.

Written from what the run saved (recipe, ``evaluation.json``, ``summary.json``); the front
matter is the Hugging Face Hub's (``library_name``, ``tags``), so a pushed timm folder is listed
as a timm image classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fgvc.inference.exported import CLASSES, PREPROCESS, RECIPE_COPY, Preprocess

if TYPE_CHECKING:
    import torch.nn as nn

    from fgvc.recipes.recipe import Recipe
    from fgvc.transforms import DataConfig


class ExportableRun(Protocol):
    """What an export and its card are made from: ``fgvc.load_run``'s :class:`fgvc.api.Run`."""

    run_dir: Path
    recipe: Recipe
    model: nn.Module
    data_config: DataConfig
    resolution: int
    class_ids: list[str]
    class_names: list[str]
    metrics: dict[str, Any]

PHASES = (("before_adaptation", "before adaptation"), ("after_adaptation", "after adaptation"))


def _front_matter(fmt: str) -> list[str]:
    library = {"timm": "timm", "onnx": "onnx", "torchscript": "pytorch"}[fmt]
    return ["---", f"library_name: {library}", "pipeline_tag: image-classification",
            "tags:", "- image-classification", "- fgvc", "- fixres", f"- {fmt}", "---", ""]


def _groups(trainable: Any) -> str:
    return "the whole network" if trainable == "all" else ", ".join(map(str, trainable))


def recipe_lines(run: ExportableRun) -> list[str]:
    """One line per stage: resolution, augmentation, epochs, what was trained."""
    lines = []
    for stage in run.recipe.stages:
        method = "fine-tuning" if stage.method == "finetune" else f"method {stage.method}"
        what = "trained" if stage.name == "train" else f"adapted ({method})"
        lines.append(f"- **{stage.name}**: {what} at {stage.resolution} px with "
                     f"{stage.augment} DA, {stage.epochs} epoch(s), batch {stage.batch_size}; "
                     f"trainable: {_groups(stage.trainable)}")
    return lines


def _cell(entry: dict | None) -> str:
    if not entry or "top1" not in entry:
        return "not evaluated"
    interval = entry.get("top1_ci95")
    shown = f"{float(entry['top1']):.1f}"
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        shown += f" [{float(interval[0]):.1f}, {float(interval[1]):.1f}]"
    return shown


def accuracy_lines(run: ExportableRun, resolution: int) -> list[str]:
    """Top-1 (%) with its 95 % Wilson interval at every evaluated resolution, before and after
    adaptation, the exported one in bold."""
    evaluation = run.metrics.get("evaluation") or {}
    phases = [(key, label) for key, label in PHASES if evaluation.get(key)]
    resolutions = sorted({int(r) for key, _ in phases for r in evaluation[key]} | {resolution})
    images = next((e.get("images") for key, _ in phases for e in evaluation[key].values()
                   if isinstance(e, dict) and e.get("images")), None)
    split = run.recipe.evaluate.split
    if not phases:
        return [f"The run saved no evaluation (split {split!r}); no accuracy to report.", ""]
    lines = [f"Top-1 accuracy (%) on the {split!r} split"
             + (f" ({images} images)" if images else "")
             + ", with its 95 % Wilson interval:", "",
             "| test resolution | " + " | ".join(label for _, label in phases) + " |",
             "|---|" + "---|" * len(phases)]
    for res in resolutions:
        name = f"**{res} px (exported)**" if res == resolution else f"{res} px"
        cells = [_cell(evaluation[key].get(str(res))) for key, _ in phases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def usage_lines(fmt: str, entry: dict, preprocess: Preprocess) -> list[str]:
    """How to run the exported file outside fgvc, in the format's own runtime."""
    k = preprocess.crop
    prep = [f"`x`: a batch of images preprocessed as `{PREPROCESS}` says (resize the shorter "
            f"side to {preprocess.resize} px, {preprocess.interpolation}; centre crop {k}; "
            "scale to [0, 1]; subtract `mean`, divide by `std`), float32, shape (N, 3, "
            f"{k}, {k}). `fgvc predict THIS_FOLDER --images photos/` does all of it.", ""]
    if fmt == "onnx":
        code = ["import onnxruntime as ort",
                'session = ort.InferenceSession("model.onnx")',
                f'logits = session.run(["{entry["output"]}"], {{"{entry["input"]}": x}})[0]']
    elif fmt == "torchscript" and entry["file"].endswith(".pt2"):
        code = ["import torch", 'model = torch.export.load("model.pt2").module()',
                "logits = model(torch.from_numpy(x))"]
    elif fmt == "torchscript":
        code = ["import torch", 'model = torch.jit.load("model.ts")',
                "logits = model(torch.from_numpy(x))"]
    elif entry.get("needs_fgvc"):
        code = ["import json, safetensors.torch, timm, torch",
                f"import fgvc.models.zoo  # registers {entry['architecture']} with timm",
                'config = json.load(open("THIS_FOLDER/config.json"))',
                'model = timm.create_model(config["architecture"], **config["model_args"])',
                'model.load_state_dict(safetensors.torch.load_file("THIS_FOLDER/model.safetensors"))',
                "logits = model.eval()(torch.from_numpy(x))"]
    else:
        code = ["import timm",
                'model = timm.create_model("local-dir:THIS_FOLDER", pretrained=True).eval()',
                "# or: timm.create_model(\"hf-hub:OWNER/REPO\", pretrained=True) once pushed",
                "config = timm.data.resolve_data_config({}, model=model)",
                "transform = timm.data.create_transform(**config)  # this card's test DA",
                "logits = model(transform(image).unsqueeze(0))"]
    return prep + ["```python", *code, "```", ""]


def render_card(run: ExportableRun, fmt: str, entry: dict, preprocess: Preprocess) -> str:
    """The whole ``README.md`` of ``run`` exported as ``fmt`` (``entry``: preprocess.json's
    ``model`` entry)."""
    recipe, k = run.recipe, preprocess.crop
    summary = run.metrics.get("summary") or {}
    sizes = summary.get("split_sizes") or {}
    adapted = recipe.stage("adapt") is not None
    served = ("the resolution it was adapted to" if k == run.resolution and adapted else
              "its final resolution" if k == run.resolution else
              f"{k} px (it was adapted to {run.resolution} px)")
    resolution_flag = "" if k == run.resolution else f" --resolution {k}"
    lines = [
        *_front_matter(fmt),
        f"# {recipe.name}: {entry['architecture']} on {recipe.dataset.name}, at {k} px",
        "",
        f"A {len(run.class_ids)}-class fine-grained classifier trained with fgvc and FixRes "
        f"(train at a low resolution, adapt to a higher test resolution), exported as {fmt} at "
        f"{served}, with the test-time preprocessing it was adapted with.",
        "",
        "## Dataset",
        "",
        f"`{recipe.dataset.name}`, {len(run.class_ids)} classes"
        + (" (" + ", ".join(f"{split} {n:,}" for split, n in sizes.items()) + " images)"
           if sizes else "")
        + f"; `{CLASSES}` maps the output index to the category id and name.",
        "",
        "## Recipe",
        "",
        f"Architecture `{recipe.model.arch}`, pretrained weights: {recipe.model.pretrained}. "
        f"The whole recipe is `{RECIPE_COPY}`.",
        "",
        *recipe_lines(run),
        "",
        "## Accuracy",
        "",
        *accuracy_lines(run, k),
        "## Preprocessing",
        "",
        *[f"{i}. {step}" for i, step in enumerate(preprocess.to_json()["steps"], 1)],
        f"{len(preprocess.to_json()['steps']) + 1}. mean {list(preprocess.mean)}, std "
        f"{list(preprocess.std)}; NCHW float32 (`{PREPROCESS}` has every number)",
        "",
        "## Use",
        "",
        *usage_lines(fmt, entry, preprocess),
        "## Reproduce",
        "",
        "```bash",
        f"fgvc run {RECIPE_COPY}  # point dataset.root at your copy of the data first",
        f"fgvc export {recipe.output_root}/{recipe.name} --format {fmt}{resolution_flag}",
        "```",
        "",
    ]
    return "\n".join(lines)
