"""``model.compile: true``: ``torch.compile`` of the forward, with eager execution wherever the
platform cannot compile (no compiler, unsupported Python, a graph the backend rejects).

Only a compile failure (torch's dynamo and inductor exceptions, ``fgvc/torch_compat.py``) turns
compilation off; out of memory, a data error or a model's own failing operation propagates as
it is. A compile can fail half-way through a forward (after a graph break, the graphs before it
already ran), when batch-norm layers in training mode have updated their running statistics
with this batch: they are restored before the eager rerun, so no batch counts twice.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn as nn

from fgvc.torch_compat import compile_failure_types

log = logging.getLogger(__name__)


class CompiledForward(nn.Module):
    """Runs ``module`` through ``torch.compile``; the first failure is logged in one line and
    every later call runs eagerly. Compilation happens lazily, at the first call in each mode
    (train or eval), so the fallback has to be decided at call time, not when wrapping."""

    def __init__(self, module: nn.Module, backend: str = "inductor"):
        super().__init__()
        self.module = module
        # Kept out of the registered submodules: its parameters are ``module``'s own.
        self.__dict__["compiled"] = _compile(module, backend)

    def forward(self, *args, **kwargs):
        compiled = self.__dict__["compiled"]
        if compiled is None:
            return self.module(*args, **kwargs)
        compile_errors, op_errors = compile_failure_types()
        saved = running_stats(self.module) if self.module.training else []
        try:
            return compiled(*args, **kwargs)
        except compile_errors as err:
            if isinstance(err, op_errors):
                raise
            self.__dict__["compiled"] = None
            restore_running_stats(saved)
            log.warning("model.compile: torch.compile failed here (%s: %s); running eagerly",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            return self.module(*args, **kwargs)

    def no_sync(self):
        """DistributedDataParallel's ``no_sync`` when the wrapped module has one."""
        inner = getattr(self.module, "no_sync", None)
        return inner() if inner is not None else contextlib.nullcontext()


def running_stats(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(buffer, copy)`` of every running statistic a forward in training mode updates
    (batch-norm and instance-norm ``track_running_stats``): a few small tensors per layer."""
    found = []
    for m in module.modules():
        if m.training and getattr(m, "track_running_stats", False):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buffer = getattr(m, name, None)
                if isinstance(buffer, torch.Tensor):
                    found.append((buffer, buffer.detach().clone()))
    return found


@torch.no_grad()
def restore_running_stats(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for buffer, copy in saved:
        buffer.copy_(copy)


def _compile(module: nn.Module, backend: str):
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        log.warning("model.compile: torch.compile is not supported on this platform; "
                    "running eagerly")
        return None
    return torch.compile(module, backend=backend)


def maybe_compile(module: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """``module`` wrapped for compiled execution when ``enabled``, else ``module`` itself."""
    return CompiledForward(module, backend) if enabled else module
