"""``fgvc export RUN --format onnx|torchscript|timm``: a finished run's network, at the
resolution it was adapted to (K_test) and with the test DA it was adapted with, in a folder a
deployment needs nothing else from fgvc for.

Every format writes, beside the model, ``preprocess.json`` (resize, crop, interpolation, mean,
std, input range: fgvc's test DA at the exported resolution), ``classes.json`` (index ->
category id -> name), ``README.md`` (a model card: dataset, recipe, accuracy before and after
adaptation with 95 % intervals, the commands that reproduce it) and ``fgvc-recipe.yaml``.

Everything that can be refused is refused before the model is loaded (:func:`check_request`):
a folder that is not a finished run, an unknown format, a missing optional extra, an output
that exists or cannot be written. The folder is built under a temporary name and renamed into
place only once the exported file has been checked: the exported model runs on
:data:`CHECK_IMAGES` images through its own runtime (onnxruntime, the loaded torch program,
timm's local-folder loading) and its logits must match the network's within ``tolerance``.
A failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fgvc.errors import ExportError
from fgvc.inference.exported import (
    CLASSES,
    EXPORT_FORMATS,
    PREPROCESS,
    RECIPE_COPY,
    ExportFolder,
    Preprocess,
    classes_json,
    load_runner,
)
from fgvc.io.atomic import cause
from fgvc.models.names import CADENE_PREFIX
from fgvc.runfolder import RunFolder
from fgvc.suggest import did_you_mean
from fgvc.workflows.model_card import ExportableRun, render_card

if TYPE_CHECKING:
    import torch.nn as nn

    from fgvc.recipes.recipe import Recipe

DEFAULT_TOLERANCE = 1e-4  # largest |logit difference| accepted between export and network
CHECK_IMAGES = 8
ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")


@dataclass(frozen=True)
class ExportRequest:
    """A checked request: the run, the format, where the folder goes."""

    folder: RunFolder
    recipe: Recipe
    fmt: str
    resolution: int | None
    out: Path
    force: bool
    push: str | None = None


@dataclass(frozen=True)
class ExportResult:
    """What was written, for the command to report."""

    out: Path
    fmt: str
    arch: str
    resolution: int
    adapted_resolution: int
    how: str  # "opset 20", "torch.export", "timm folder"...
    difference: float  # largest |logit difference|, export vs network, on the check images
    tolerance: float
    pushed: str | None = None


def check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {fmt}: unknown export format{did_you_mean(fmt, EXPORT_FORMATS)}"
                          f" (known: {', '.join(EXPORT_FORMATS)})")


def check_output_folder(out: Path, force: bool) -> None:
    """Refuse an existing output without ``force``, and an output whose parent cannot hold a
    folder (a file on the way, no write permission), before anything is written."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")
    if out.exists() and not force:
        raise ExportError(f"--out {out}: exists; pass --force to replace it")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"--out {out}: cannot create a folder there ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: cannot write in {parent} (permission denied)")


def check_request(run_dir: str | Path, fmt: str, *, resolution: int | None = None,
                  out: str | Path | None = None, force: bool = False,
                  push: str | None = None) -> ExportRequest:
    """Everything about an export that can be checked without loading the network."""
    folder = RunFolder.open(run_dir)
    recipe = folder.read_recipe()
    folder.final_weights(recipe)  # a run without its final (adapted) weights is refused here
    check_format(fmt)
    if resolution is not None and resolution < 1:
        raise ExportError(f"--resolution {resolution}: expected a whole number of pixels >= 1")
    if fmt == "timm" and recipe.model.arch.startswith(CADENE_PREFIX):
        raise ExportError(f"{recipe.model.arch}: cannot be exported as a timm folder (timm does "
                          "not build Cadene's networks); use --format onnx or torchscript")
    if fmt == "onnx":
        from fgvc.inference.onnx_model import require_modules

        require_modules(ONNX_MODULES, "fgvc export --format onnx")
    if push is not None and push.count("/") != 1:
        raise ExportError(f"--push {push}: expected a Hugging Face repository id, e.g. "
                          "your-name/cub200-resnet50")
    target = Path(out) if out is not None else folder.export_dir(
        fmt, resolution or recipe.final_resolution)
    check_output_folder(target, force)
    return ExportRequest(folder, recipe, fmt, resolution, target, force, push)


def check_runs_at(model: nn.Module, arch: str, resolution: int, num_classes: int) -> None:
    """One forward pass at ``resolution``: a network that cannot run there (a ViT whose patch
    size does not divide it, a size below the network's strides) is refused in one line."""
    import torch

    from fgvc.models.export import failure_reason

    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, 3, resolution, resolution))
    except Exception as err:  # a network's own checks raise any type
        raise ExportError(f"{arch} cannot run at {resolution} px ({failure_reason(err)}); "
                          "choose another --resolution") from None
    if tuple(logits.shape) != (2, num_classes):
        raise ExportError(f"{arch} at {resolution} px gives outputs of shape "
                          f"{tuple(logits.shape)}, expected (batch, {num_classes})")


def preprocess_for(run: ExportableRun, resolution: int) -> Preprocess:
    """The run's test DA at ``resolution`` as plain numbers."""
    from fgvc.datasets.decode import decode_options
    from fgvc.transforms import resize_size

    cfg, decode = run.data_config, decode_options(run.recipe.dataset)
    resize = resize_size(resolution, cfg.crop_pct)
    if resize < resolution:
        raise ExportError(f"crop_pct {cfg.crop_pct:g}: the resized image ({resize} px) would be "
                          f"smaller than the crop ({resolution} px); expected crop_pct <= 1")
    return Preprocess(crop=resolution, resize=resize, interpolation=cfg.interpolation,
                      mean=tuple(cfg.mean), std=tuple(cfg.std), input_range=cfg.input_range,
                      input_space=cfg.input_space, exif_transpose=decode.exif_transpose,
                      max_image_pixels=decode.max_image_pixels)


def check_images(preprocess: Preprocess, count: int = CHECK_IMAGES, seed: int = 0) -> np.ndarray:
    """``count`` seeded photo-like images of several sizes and aspect ratios (smooth colour
    fields with fine texture), through the export's own preprocessing: (count, 3, K, K)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        width = preprocess.resize + int(rng.integers(0, preprocess.resize))
        height = preprocess.resize + int(rng.integers(0, preprocess.resize // 2 + 1))
        width, height = (width, height) if i % 2 else (height, width)
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
        pixels = (base + rng.integers(-12, 13, (height, width, 1))).clip(0, 255).astype(np.uint8)
        out.append(preprocess(Image.fromarray(pixels)))
    return np.stack(out)


def _arch(run: ExportableRun) -> str:
    return run.recipe.model.arch


def _write_model(run: ExportableRun, tmp: Path, fmt: str, resolution: int) -> tuple[dict, str]:
    """The model file(s) of ``fmt`` in ``tmp``; returns preprocess.json's ``model`` entry and
    how the model was written."""
    import torch

    from fgvc.models import export as writers

    arch, model = _arch(run), run.model
    example = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    entry: dict[str, Any] = {"format": fmt, "architecture": arch, "resolution": resolution,
                             "num_classes": len(run.class_ids), "input": writers.INPUT_NAME,
                             "output": writers.OUTPUT_NAME, "batch": "dynamic",
                             "outputs": "logits (softmax gives the class probabilities)"}
    if fmt == "onnx":
        opset = writers.write_onnx(model, tmp / "model.onnx", example, arch)
        return {**entry, "file": "model.onnx", "opset": opset}, f"opset {opset}, dynamic batch"
    if fmt == "torchscript":
        name, how = writers.write_torch_program(model, tmp, example, arch)
        return {**entry, "file": name, "captured_with": how.split(" (")[0]}, how
    timm_arch = writers.timm_architecture(model, arch)
    if timm_arch is None:
        raise ExportError(f"{arch}: cannot be exported as a timm folder (timm does not build "
                          "this network); use --format onnx or torchscript")
    cfg = run.data_config
    writers.write_timm_folder(model, tmp, arch=timm_arch, resolution=resolution,
                              crop_pct=cfg.crop_pct,
                              interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
                              label_names=list(run.class_names), tag=f"fgvc_{run.recipe.name}")
    entry = {**entry, "file": "model.safetensors", "architecture": timm_arch,
             "needs_fgvc": writers.needs_fgvc(timm_arch)}
    return entry, "timm folder: config.json + model.safetensors"


def largest_difference(run: ExportableRun, tmp: Path, images: np.ndarray) -> float:
    """|export's logits - network's logits|, largest over the check images (fp32)."""
    import torch

    with torch.no_grad():
        reference = run.model(torch.from_numpy(images)).numpy()
    exported = load_runner(ExportFolder.open(tmp), device="cpu")(images)
    if exported.shape != reference.shape:
        raise ExportError(f"the exported model gives outputs of shape {exported.shape}, the "
                          f"network {reference.shape}")
    return float(np.abs(exported.astype(np.float64) - reference).max())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def export_run(run: ExportableRun, request: ExportRequest,
               tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Write, check and move into place the export ``request`` asks for (see the module
    docstring); ``run`` is the request's run, loaded."""
    from fgvc.inference.predictions import atomic_directory

    if not tolerance > 0:
        raise ExportError(f"--tolerance {tolerance}: expected a positive number")
    resolution = request.resolution or run.resolution
    run.model.cpu().float().eval()  # exported and checked in fp32 on the CPU
    check_runs_at(run.model, _arch(run), resolution, len(run.class_ids))
    preprocess = preprocess_for(run, resolution)
    try:
        with atomic_directory(request.out) as tmp:
            entry, how = _write_model(run, tmp, request.fmt, resolution)
            _write_json(tmp / PREPROCESS, {**preprocess.to_json(), "model": entry})
            _write_json(tmp / CLASSES, classes_json(run.class_ids, run.class_names))
            difference = largest_difference(run, tmp, check_images(preprocess))
            if not difference <= tolerance:
                raise ExportError(f"{_arch(run)}: the {request.fmt} export's logits differ from "
                                  f"the network's by up to {difference:.2e} on {CHECK_IMAGES} "
                                  f"images (limit {tolerance:.0e}); nothing was written")
            (tmp / RECIPE_COPY).write_text(request.folder.recipe_path.read_text(encoding="utf-8"),
                                           encoding="utf-8")
            (tmp / "README.md").write_text(render_card(run, request.fmt, entry, preprocess),
                                           encoding="utf-8")
    except OSError as err:
        raise ExportError(f"--out {request.out}: cannot write the export there "
                          f"({cause(err)})") from None
    result = ExportResult(request.out, request.fmt, entry["architecture"], resolution,
                          run.resolution, how, difference, tolerance)
    if request.push:
        push_folder(request.out, request.push)
        result = dataclasses.replace(result, pushed=request.push)
    return result


def push_folder(folder: Path, repo: str) -> None:
    """Upload the folder to the Hugging Face Hub repository ``repo`` (created if needed)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ExportError("--push needs huggingface_hub: pip install huggingface_hub") from None
    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder),
                          commit_message="fgvc export")
    except Exception as err:  # offline, no token, no permission: the hub's own error types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"--push {repo}: upload failed ({first}); the export is at "
                          f"{folder}") from None


def describe(result: ExportResult) -> list[str]:
    """The command's closing lines: the check, then what was written where."""
    runtime = {"onnx": "onnxruntime", "torchscript": "the loaded program",
               "timm": "timm's local-dir loading"}[result.fmt]
    note = ("the adapted resolution" if result.resolution == result.adapted_resolution
            else f"not the adapted {result.adapted_resolution} px")
    lines = [f"check: max |logit difference|, {runtime} vs PyTorch on {CHECK_IMAGES} images: "
             f"{result.difference:.2e} (limit {result.tolerance:.0e})",
             f"exported {result.arch} at {result.resolution} px ({note}) as {result.fmt} "
             f"({result.how}) -> {result.out}"]
    if result.pushed:
        lines.append(f"uploaded to https://huggingface.co/{result.pushed}")
    return lines
