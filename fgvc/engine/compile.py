"""``model.compile: true``: ``torch.compile`` of the forward, with eager execution wherever the
platform cannot compile (no compiler, unsupported Python, a graph the backend rejects)."""

from __future__ import annotations

import contextlib
import logging

import torch.nn as nn

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
        try:
            return compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 -- any compiler failure means: run eagerly
            self.__dict__["compiled"] = None
            log.warning("model.compile: torch.compile failed here (%s: %s); running eagerly",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            return self.module(*args, **kwargs)

    def no_sync(self):
        """DistributedDataParallel's ``no_sync`` when the wrapped module has one."""
        inner = getattr(self.module, "no_sync", None)
        return inner() if inner is not None else contextlib.nullcontext()


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
