"""Error types the CLI reports as one line, defined here without importing torch.

``fgvc --help`` and the commands that need no model must start at once, so `fgvc/cli.py` may only
import light modules; the modules that raise these errors (fgvc/models/...) import them from
here.
"""

from __future__ import annotations


class GroupError(ValueError):
    """A group or module path does not resolve on this model; the message shows how to fix it."""


class EnsembleError(ValueError):
    """Members that cannot be combined; the message names them and what differs."""


class WeightsError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message says which and why."""

