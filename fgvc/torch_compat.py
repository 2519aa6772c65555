"""The private PyTorch and torchvision APIs fgvc relies on, each behind one function with a
fallback to the public path. Nothing else in fgvc imports a private torch name.

- ``torchvision.transforms.functional._compute_resized_output_size``: the size ``T.Resize(short)``
  gives (:func:`resized_output_size`; fallback: the rule ``T.Resize`` documents, in Python).
- ``torchvision.transforms.v2.functional._geometry._do_native_uint8_resize_on_cpu``: whether
  torch resizes uint8 natively on this CPU (:func:`native_uint8_resize_on_cpu`; fallback:
  ``False``, so torchvision's public ``resize`` runs, converting to float where it must).
- ``torch.utils.data.dataloader._MultiProcessingDataLoaderIter._process_data`` and
  ``torch.utils.data._utils.pin_memory.pin_memory``: the hook where the main process copies a
  batch out of a worker's reused buffers before the worker gets its next task
  (``fgvc/engine/shared_batches.py``). Fallback: :func:`loader_hook_problem` says why the hook
  is unusable, and the loaders then use torch's plain iterator, a new shared-memory file per
  batch (same batches, slower), with one warning.

Tested with torch 2.14.1 and torchvision 0.29.1 (``pyproject.toml`` keeps only lower bounds).
``tests/test_torch_private.py`` checks each private API on the installed versions (presence,
signature, behaviour on a small input) and fails with a message naming the one that changed; it
also checks that each fallback gives what the private path gives.

No fgvc imports: ``fgvc/transforms.py`` and the engine both import this module.
"""

from __future__ import annotations

import functools
import inspect
import logging

log = logging.getLogger(__name__)

RESIZED_OUTPUT_SIZE = "torchvision.transforms.functional._compute_resized_output_size"
NATIVE_UINT8_RESIZE = ("torchvision.transforms.v2.functional._geometry."
                       "_do_native_uint8_resize_on_cpu")
LOADER_ITER = "torch.utils.data.dataloader._MultiProcessingDataLoaderIter"
PROCESS_DATA = LOADER_ITER + "._process_data"
PIN_MEMORY = "torch.utils.data._utils.pin_memory.pin_memory"


_warned: set[str] = set()


def _fell_back(what: str, instead: str, key: str | None = None) -> None:
    key = key or what
    if key not in _warned:
        _warned.add(key)
        log.warning("%s is not usable in this torch/torchvision (fgvc was tested with torch "
                    "2.14.1, torchvision 0.29.1): using %s", what, instead)


# --- the size T.Resize(short) gives -------------------------------------------------------

def resized_output_size_public(height: int, width: int, short: int) -> tuple[int, int]:
    """``T.Resize``'s documented rule: the shorter side becomes ``short``, the longer
    ``int(short * long / shorter)`` (truncated), the aspect ratio otherwise kept."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _resized_output_size():
    """The function ``resized_output_size`` is: the private one where it takes fgvc's call,
    else the documented rule."""
    try:
        from torchvision.transforms import functional as F

        private = F._compute_resized_output_size
        private([3, 4], [2])  # probed once: the signature fgvc calls
    except (AttributeError, ImportError, TypeError, ValueError):
        _fell_back(RESIZED_OUTPUT_SIZE, "the documented rule computed here")
        return resized_output_size_public

    def via_private(height: int, width: int, short: int) -> tuple[int, int]:
        new_h, new_w = private([height, width], [short])
        return new_h, new_w

    return via_private


# resized_output_size(height, width, short) -> (height, width) after ``T.Resize(short)``.
# Chosen once, at import: it runs per image and resolution on the fast path.
resized_output_size = _resized_output_size()


# --- whether torch resizes uint8 natively on this CPU ---------------------------------------

@functools.cache
def native_uint8_resize_on_cpu(mode) -> bool:
    """torchvision's answer for the ``InterpolationMode`` ``mode``; ``False`` (torchvision's
    public ``resize``, same pixels) where the private function is gone or changed."""
    try:
        from torchvision.transforms.v2.functional._geometry import (
            _do_native_uint8_resize_on_cpu,
        )

        return bool(_do_native_uint8_resize_on_cpu(mode))
    except (ImportError, TypeError):
        _fell_back(NATIVE_UINT8_RESIZE, "torchvision's public resize")
        return False


# --- the loader hook of the shared batches ----------------------------------------------------

def loader_iter_base() -> type:
    """The class ``SharedBatchIter`` derives from: torch's multiprocessing loader iterator, or
    ``object`` where it is gone (``loader_hook_problem`` then says so and nobody builds one)."""
    try:
        from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
    except ImportError:
        return object
    return _MultiProcessingDataLoaderIter


@functools.cache
def loader_hook_problem() -> str | None:
    """``None`` where the private loader APIs the shared batches use are as fgvc expects; else
    what changed, naming the private API."""
    base = loader_iter_base()
    if base is object:
        return f"{LOADER_ITER} is gone"
    hook = getattr(base, "_process_data", None)
    if not callable(hook):
        return f"{PROCESS_DATA} is gone"
    try:
        params = list(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        return f"{PROCESS_DATA} has no readable signature"
    if params not in (["self", "data"], ["self", "data", "worker_idx"]):
        return f"{PROCESS_DATA} takes {params}, not (self, data[, worker_idx])"
    try:
        from torch.utils.data._utils.pin_memory import pin_memory  # noqa: F401
    except ImportError:
        return f"{PIN_MEMORY} is gone"
    return None


def shared_batches_supported() -> bool:
    """Whether the loaders may use the shared batches; warns once where not."""
    problem = loader_hook_problem()
    if problem is not None:
        _fell_back(problem, "torch's plain loader iterator (a new shared-memory file per batch)",
                   key=PROCESS_DATA)
    return problem is None


def pin_memory(data, device=None):
    """torch's recursive pinning of a batch (only reached where ``shared_batches_supported``)."""
    from torch.utils.data._utils.pin_memory import pin_memory as private

    return private(data, device)


# --- which exceptions mean "torch.compile could not compile this" ---------------------------

DYNAMO_EXC = "torch._dynamo.exc"
INDUCTOR_EXC = "torch._inductor.exc"


@functools.cache
def compile_failure_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """``(compile_errors, op_errors)``: what torch.compile raises when it cannot trace or
    compile a graph (dynamo's exceptions, inductor's C++/Triton/lowering failures), and those
    of them that are rather the model's own operation failing on these inputs (dynamo's
    ``TorchRuntimeError``: an eager run fails the same way, so it is no compile failure).
    torch has no public name for either; where the private ones are gone, ``((), ())``: no
    failure is taken for a compile failure, so none is hidden behind an eager rerun."""
    try:
        from torch._dynamo import exc as dynamo
        from torch._inductor import exc as inductor

        compile_errors = (dynamo.TorchDynamoException,) + tuple(
            cls for cls in (getattr(dynamo, "TritonUnavailableError", None),
                            getattr(inductor, "CppCompileError", None),
                            getattr(inductor, "InvalidCxxCompiler", None),
                            getattr(inductor, "OperatorIssue", None)) if cls is not None)
        return compile_errors, (dynamo.TorchRuntimeError,)
    except (ImportError, AttributeError):
        _fell_back(f"{DYNAMO_EXC}.TorchDynamoException",
                   "no eager fallback for model.compile (a compile failure stops the run)")
        return (), ()
