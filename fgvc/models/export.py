"""A trained network written in a deployable format, and the torch formats read back.

- ONNX: torch's exporter (``torch.onnx.export``, the ``torch.export``-based one), one fixed
  spatial size (the exported resolution) and a dynamic batch axis, at the exporter's default
  opset, lowered where the installed onnx or onnxruntime supports less.
- ``torchscript``: a ``torch.export`` program (``model.pt2``); where ``torch.export`` cannot
  capture the network, a TorchScript trace (``model.ts``), which the installed torch deprecates
  but still runs. Either is checked against the network afterwards by the caller.
- timm: timm's own Hugging Face folder writer (``save_for_hf``: ``config.json`` +
  ``model.safetensors``), with the exported resolution, crop ratio, interpolation, mean and std
  as its pretrained configuration and the class names as ``label_names``.

A network a format cannot represent is refused in one line naming the network, the format and
the reason (the exporters' own messages run to pages).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn

from fgvc.errors import ExportError

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Loggers the exporters write progress, graphs and hints to; silenced while exporting, since a
# failure is reported in one line and a success needs no commentary.
EXPORT_LOGGERS = ("torch", "onnxscript", "onnx_ir", "torch.onnx", "torch.export",
                  "torch.fx", "torch._dynamo", "torch._export", "timm")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the exporters' warnings, log records and printed progress for the block."""
    loggers = [logging.getLogger(name) for name in EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def failure_reason(err: BaseException) -> str:
    """The first line of the innermost cause of an exporter's failure, without colour codes,
    at most 200 characters: what went wrong, not the exporter's advice on reporting bugs."""
    while err.__cause__ is not None and err.__cause__ is not err:
        err = err.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _batch_dim() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1)}


def onnxruntime_max_opset() -> int | None:
    """The newest default-domain opset onnxruntime has a CPU kernel for (its kernel
    registry), or ``None`` where this onnxruntime does not list its kernels."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        kernels = state.get_all_opkernel_def()
    except (ImportError, AttributeError):
        return None
    versions = [k.version_range[0] for k in kernels
                if k.domain in ("", "ai.onnx") and k.provider == "CPUExecutionProvider"]
    return max(versions) if versions else None


def opset_limit() -> int:
    """The newest opset both the installed onnx and onnxruntime support."""
    import onnx

    limits = [onnx.defs.onnx_opset_version(), onnxruntime_max_opset()]
    return min(v for v in limits if v is not None)


def write_onnx(model: nn.Module, path: Path, example: torch.Tensor, name: str) -> int:
    """``model`` as ONNX at ``example``'s spatial size with a dynamic batch axis; returns the
    opset written: the exporter's default, lowered to what onnx and onnxruntime support."""

    def export(opset: int | None):
        return torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                 dynamic_shapes=(_batch_dim(),), input_names=[INPUT_NAME],
                                 output_names=[OUTPUT_NAME], verbose=False)

    try:
        with quiet_exporters(), torch.no_grad():
            program = export(None)
            opset = program.model.opset_imports[""]
            if opset > opset_limit():
                opset = opset_limit()
                program = export(opset)
            program.save(str(path))
    except Exception as err:  # the exporter raises many types, none of them fgvc's
        raise ExportError(f"{name}: cannot be exported to ONNX ({failure_reason(err)})") from None
    return int(opset)


def write_torch_program(model: nn.Module, folder: Path, example: torch.Tensor,
                        name: str) -> tuple[str, str]:
    """``model`` as a ``torch.export`` program (``model.pt2``), else as a TorchScript trace
    (``model.ts``); returns (file name, how it was captured)."""
    try:
        with quiet_exporters():
            program = torch.export.export(model, (example,), dynamic_shapes=(_batch_dim(),))
            torch.export.save(program, str(folder / "model.pt2"))
        return "model.pt2", "torch.export"
    except Exception as err:  # torch.export's failures have no common type
        export_reason = failure_reason(err)
    try:
        with quiet_exporters(), torch.no_grad():
            traced = torch.jit.trace(model, example)
            traced.save(str(folder / "model.ts"))
    except Exception as err:  # the tracer's failures have no common type
        raise ExportError(f"{name}: cannot be exported as a torch program (torch.export: "
                          f"{export_reason}; TorchScript trace: {failure_reason(err)})") from None
    return "model.ts", f"TorchScript trace (torch.export failed: {export_reason})"


def load_torch_program(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``model.pt2`` or ``model.ts`` file as a callable module."""
    with quiet_exporters():
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()


def timm_architecture(model: nn.Module, arch: str) -> str | None:
    """The timm architecture ``model`` was built as (its pretrained configuration names it;
    fgvc's own networks, registered with timm, are named by the recipe's ``arch``), or ``None``
    for a network timm does not build (Cadene's ``pretrainedmodels:``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") or arch.partition(".")[0]
    return name if isinstance(name, str) and timm.models.is_model(name) else None


def needs_fgvc(arch: str) -> bool:
    """An architecture fgvc registers with timm (``zoo.py``, ``mpncov.py``): plain timm
    knows it only after ``import fgvc.models.zoo``."""
    return timm.models.model_entrypoint(arch).__module__.startswith("fgvc.")


def write_timm_folder(model: nn.Module, folder: Path, *, arch: str, resolution: int,
                      crop_pct: float, interpolation: str, mean: tuple, std: tuple,
                      label_names: list[str], tag: str) -> None:
    """``config.json`` + ``model.safetensors`` in timm's Hugging Face layout, its pretrained
    configuration set to the exported test DA (``input_size``, ``crop_pct``, ``crop_mode``
    center, ``interpolation``, ``mean``, ``std``), so that timm's own
    ``resolve_data_config`` + ``create_transform`` rebuild fgvc's test DA."""
    from timm.models import save_for_hf

    data = {"input_size": (3, resolution, resolution), "crop_pct": crop_pct,
            "crop_mode": "center", "interpolation": interpolation, "mean": tuple(mean),
            "std": tuple(std)}
    try:
        save_for_hf(model, str(folder), safe_serialization=True, data_config=data,
                    model_config={"label_names": list(label_names),
                                  "pretrained_cfg": {"tag": tag, "architecture": arch}})
    except (ValueError, TypeError, AssertionError, RuntimeError) as err:
        raise ExportError(f"{type(model).__name__}: timm cannot save it as a Hugging Face "
                          f"folder ({failure_reason(err)})") from None


def load_timm_folder(folder: Path) -> nn.Module:
    """The folder as timm loads it, in eval mode: timm's local hub-folder loading; for fgvc's
    own architectures (whose builders refuse ``pretrained=True``: they have no weights of their
    own) timm builds the network from ``config.json``'s arguments and the weights are loaded
    into it."""
    import safetensors.torch

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    with quiet_exporters():
        if not needs_fgvc(config["architecture"]):
            return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        model = timm.create_model(config["architecture"], **config.get("model_args", {}))
    model.load_state_dict(safetensors.torch.load_file(str(folder / "model.safetensors")))
    return model.eval()


def torch_runner(folder: Path, model_path: Path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """An exported torch program or timm folder as ``logits = runner(batch)`` on numpy
    arrays, on the CPU (serving on a GPU is what the ONNX export is for)."""
    module = load_timm_folder(folder) if fmt == "timm" else load_torch_program(model_path)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()

    return run
