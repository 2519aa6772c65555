"""``FgvcError``, the base every fgvc error derives from, and error types the CLI reports as one
line, defined here without importing torch.

Every exception class fgvc defines derives from ``FgvcError`` as well as from the built-in it
always derived from (``class SchemaError(FgvcError, ValueError)``), so ``except FgvcError``
catches any failure fgvc reports and existing ``except ValueError`` still works
(``tests/test_errors.py`` checks every module). The one exception is ``Preempted``: a stop on a
signal, not an error, which derives from ``BaseException`` (as ``KeyboardInterrupt`` does) so
that code catching failures lets it through.

This module imports nothing, so every layer of fgvc may import it. ``fgvc --help`` and the
commands that need no model must start at once, so `fgvc/cli.py` may only import light modules;
the modules that raise these errors (fgvc/models/...) import them from here.
"""

from __future__ import annotations


class FgvcError(Exception):
    """The base of every error fgvc defines (each also derives from a built-in error)."""


class GroupError(FgvcError, ValueError):
    """A group or module path does not resolve on this model; the message shows how to fix it."""


class EnsembleError(FgvcError, ValueError):
    """Members that cannot be combined; the message names them and what differs."""


class WeightsError(FgvcError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message says which and why."""


class ExportError(FgvcError, ValueError):
    """A model that cannot be exported as asked (format, resolution, output folder, a network
    the format cannot represent, a missing optional extra), or an export folder that cannot be
    read; the message names which and why."""


class UsageError(FgvcError, ValueError):
    """A command-line option or API argument is wrong or conflicts with another; the message
    names it and what is expected."""


class RecipeError(FgvcError, ValueError):
    """A recipe field the schema accepts but this model, dataset or machine cannot honour
    (layer decay on a model without numbered layers, ``device: cuda`` without a GPU); the
    message names the field."""
