"""Where a run computes and in which precision.

``precision`` (recipe field):

- ``auto`` (the default) autocasts to bf16 where bf16 is fast: on CUDA, and on CPUs that run it
  natively (AMX tiles or AVX512-BF16, where oneDNN's bf16 convolutions and matrix products run
  about twice as fast as fp32); every other CPU stays in fp32, because there bf16 is emulated
  and several times slower.
- ``bf16`` autocasts on any device; on a CPU without native bf16 it is honoured (a user may
  want the numerics) with a warning in the console, ``log.txt`` and ``report.md``.
- ``fp32`` never autocasts.

Weights, optimiser state and BN statistics stay fp32 under autocast, and no loss scaling is
needed for bf16.

The precision is a setting of the run, read by every ``autocast`` call below rather than passed
down through every loop: whoever picks the device for a run calls ``set_precision`` once;
``precision_record`` says what was asked and what ran, for ``summary.json`` and the report.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Literal

import torch

from fgvc.errors import RecipeError

log = logging.getLogger(__name__)
Precision = Literal["auto", "fp32", "bf16"]
_PRECISION: dict[str, str] = {"value": "auto"}


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RecipeError("recipe asks for device: cuda but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AMX tiles or AVX512-BF16 instructions: bf16 convolutions and matmuls run natively.
    Cached: the answer cannot change within a process and autocast asks on every batch."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 runs at hardware speed on ``device`` (not emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return device.type == "cpu" and cpu_has_native_bf16()


def precision_warning(precision: str, device: torch.device) -> str | None:
    """The warning an explicit ``bf16`` on a CPU without native bf16 earns, else None; one
    text for the console, log.txt and report.md."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return ("precision bf16 on a CPU without AMX or AVX512-BF16: bf16 is emulated there and "
                "several times slower than fp32 (precision: auto or fp32 avoids it)")
    return None


def set_precision(precision: Precision, device: torch.device) -> None:
    """The precision every later ``autocast(device)`` of this process uses; logs the warning
    of :func:`precision_warning` (the run's log handlers then carry it to log.txt)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise RecipeError(f"precision: expected auto, fp32 or bf16, got {precision!r}")
    _PRECISION["value"] = precision
    warning = precision_warning(precision, device)
    if warning:
        log.warning("%s", warning)
    else:
        log.debug("precision %s on %s: %s", precision, device.type,
                  "bf16 autocast" if autocast_dtype(device) is not None else "fp32")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the run's precision asks for autocast on this device, else None (fp32)."""
    precision = _PRECISION["value"]
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if precision == "bf16" or device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_record(device: torch.device) -> dict:
    """What the recipe asked, what runs on ``device`` and whether bf16 is native there:
    ``summary.json``'s ``precision`` (the report's "Precision" line reads it)."""
    requested = _PRECISION["value"]
    record = {"requested": requested,
              "used": "bf16" if autocast_dtype(device) is not None else "fp32",
              "native_bf16": bf16_is_native(device)}
    warning = precision_warning(requested, device)
    return {**record, "warning": warning} if warning else record


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The run's autocast on ``device`` (see the module docstring); a no-op in fp32."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def channels_last_on(device: torch.device, requested: bool = True) -> bool:
    """Whether to lay images and weights out channels-last: on CUDA, and on the CPU under bf16
    autocast, where oneDNN's bf16 kernels want it (fp32 on the CPU keeps the default layout, so
    ``auto`` on a CPU without native bf16 keeps it too)."""
    return requested and (device.type == "cuda" or autocast_dtype(device) is not None)
