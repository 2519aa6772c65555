"""Packaging that pyproject.toml cannot say: the wheel carries the top-level recipes/ folder.

Users look for recipes in the repository's recipes/, so the YAML files (and the JSON Schema
their first line names, for editors) stay there; a wheel or a
non-editable install gets them as package data under fgvc/_shipped/recipes/, which
fgvc/recipes/library.py reads (an editable install reads the top-level folder itself).
Everything else about the package is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

SHIPPED = {"fgvc._shipped.recipes": "recipes", "fgvc._shipped.recipes.table3": "recipes/table3"}

setup(
    packages=find_namespace_packages(include=["fgvc", "fgvc.*"], exclude=["*.__pycache__"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={"fgvc._shipped.recipes": ["*.yaml", "fgvc.schema.json"],
                  "fgvc._shipped.recipes.table3": ["*.yaml"]},
)
