"""fgvc: fine-grained visual classification with the FixRes two-stage recipe."""

__version__ = "0.1.0"
