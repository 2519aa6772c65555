"""An exported ONNX model run by onnxruntime: what ``fgvc predict EXPORT_DIR`` serves with, and
what ``fgvc export --format onnx`` checks its file with.

onnxruntime (and onnx, onnxscript for writing) are the optional extra ``fgvc[export]``; they
are imported only here and only when a model is opened, and a missing one is reported in one
line that says how to install it. Nothing here imports torch: a serving machine needs
onnxruntime, numpy and Pillow only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from fgvc.errors import ExportError

INSTALL_HINT = "pip install 'fgvc[export]'"
DEVICES = ("auto", "cpu", "cuda")


def require_modules(modules: tuple[str, ...], needed_for: str) -> None:
    """Refuse in one line when one of ``modules`` (of the ``export`` extra) is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"{needed_for} needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: "
                          f"{INSTALL_HINT} (onnx, onnxruntime, onnxscript)")


def providers(device: str = "auto") -> list[str]:
    """onnxruntime's execution providers for ``device``: CUDA first where the installed
    onnxruntime has it (``auto``, ``cuda``), the CPU always as the fallback."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ExportError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ExportError("device 'cuda': this onnxruntime has no CUDA provider (install "
                          "onnxruntime-gpu on a machine with a GPU), or use device 'cpu'")
    cuda = has_cuda and device in ("auto", "cuda")
    return (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]


class OnnxModel:
    """``model(batch)``: an (N, 3, K, K) float32 array in, (N, classes) logits out."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        """``threads``: onnxruntime's intra-op threads (default: its own choice, one per
        physical core)."""
        require_modules(("onnxruntime",), "running an ONNX export")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers(device))
        except Exception as err:  # onnxruntime raises its own untyped failures
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"{path}: onnxruntime cannot load this model ({first})") from None
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        inputs = {self.input: np.ascontiguousarray(batch, dtype=np.float32)}
        return self.session.run([self.output], inputs)[0]
