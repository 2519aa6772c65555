"""Workflows that chain the stages: a whole run, resolution sweeps, Table 3, ensemble recipes."""
