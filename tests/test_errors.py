"""Every exception class fgvc defines derives from ``fgvc.errors.FgvcError`` (and keeps the
built-in base existing ``except`` clauses catch); ``fgvc/errors.py`` imports nothing, so every
layer can import it."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import fgvc
from fgvc.errors import FgvcError

# Exceptions that are not errors, each with the reason.
NOT_ERRORS = {
    # A stop on a signal (SIGTERM/SIGUSR1), not a failure: code that catches FgvcError to report
    # or skip a failed run must let it through, and the CLI exits 128 + signal for it.
    "fgvc.engine.preemption.Preempted",
}
SKIPPED_MODULES = {"fgvc.__main__"}  # runs the command line when imported


def _fgvc_modules() -> list:
    names = [m.name for m in pkgutil.walk_packages(fgvc.__path__, "fgvc.")
             if m.name not in SKIPPED_MODULES]
    return [importlib.import_module(name) for name in ["fgvc", *names]]


def test_every_fgvc_exception_derives_from_fgvc_error():
    defined = {}
    for module in _fgvc_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("fgvc"):
                defined[f"{obj.__module__}.{obj.__qualname__}"] = obj
    assert len(defined) >= 20, sorted(defined)
    assert set(defined) >= NOT_ERRORS, "an exemption names a class that no longer exists"
    missing = sorted(name for name, cls in defined.items()
                     if name not in NOT_ERRORS and not issubclass(cls, FgvcError))
    assert not missing, f"derive these from fgvc.errors.FgvcError as well: {missing}"
    builtin_only = sorted(name for name, cls in defined.items()
                          if cls is not FgvcError and name not in NOT_ERRORS
                          and not any(issubclass(cls, b) for b in (ValueError, RuntimeError,
                                                                   OSError)))
    assert not builtin_only, f"keep the built-in base existing catches rely on: {builtin_only}"


def test_errors_module_imports_nothing():
    tree = ast.parse(Path(inspect.getfile(FgvcError)).read_text())
    imports = [ast.unparse(node) for node in tree.body
               if isinstance(node, (ast.Import, ast.ImportFrom))
               and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    assert imports == []
