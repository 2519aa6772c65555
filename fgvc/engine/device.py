"""Where a run computes and in which precision.

``precision`` (recipe field): ``auto`` is bf16 autocast on CUDA and fp32 on the CPU; ``bf16``
is bf16 autocast on either (on CPUs with AMX or AVX512-BF16 units oneDNN runs convolutions and
matrix products about twice as fast as in fp32; elsewhere bf16 is emulated and slower, which is
logged); ``fp32`` never autocasts. Weights, optimiser state and BN statistics stay fp32 under
autocast, and no loss scaling is needed for bf16.

The precision is a setting of the run, read by every ``autocast`` call below rather than passed
down through every loop: whoever picks the device for a run calls ``set_precision`` once.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)
Precision = Literal["auto", "fp32", "bf16"]
_PRECISION: dict[str, str] = {"value": "auto"}


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("recipe asks for device: cuda but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cpu_has_native_bf16() -> bool:
    """AMX tiles or AVX512-BF16 instructions: bf16 convolutions and matmuls run natively."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


def set_precision(precision: Precision, device: torch.device) -> None:
    """The precision every later ``autocast(device)`` of this process uses."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision: expected auto, fp32 or bf16, got {precision!r}")
    _PRECISION["value"] = precision
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("precision bf16 on a CPU without AMX or AVX512-BF16: bf16 is emulated "
                    "there and slower than fp32 (precision: auto or fp32 avoids it)")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the run's precision asks for autocast on this device, else None (fp32)."""
    precision = _PRECISION["value"]
    if precision == "fp32":
        return None
    if device.type == "cuda" or (precision == "bf16" and device.type == "cpu"):
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The run's autocast on ``device`` (see the module docstring); a no-op in fp32."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def channels_last_on(device: torch.device, requested: bool = True) -> bool:
    """Whether to lay images and weights out channels-last: on CUDA, and on the CPU under bf16
    autocast, where oneDNN's bf16 kernels want it (fp32 on the CPU keeps the default layout)."""
    return requested and (device.type == "cuda" or autocast_dtype(device) is not None)
