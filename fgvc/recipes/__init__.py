"""Recipes: the typed schema, YAML loading with `--set` overrides, and the resolved plan."""
