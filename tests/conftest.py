"""Shared fixtures: a tiny synthetic dataset and a tiny recipe, so tests run in seconds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

TINY_OPTIONS = {"num_classes": 4, "train_per_class": 6, "val_per_class": 3, "test_per_class": 3,
                "min_side": 40, "max_side": 64, "seed": 3}


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    from fgvc.datasets import load_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    load_dataset("synthetic", root, TINY_OPTIONS)
    return root


@pytest.fixture
def tiny_recipe_dict(tiny_data_root, tmp_path) -> dict:
    """A full two-stage recipe on the tiny dataset with timm's 0.4M-parameter test_resnet."""
    return tiny_recipe(tiny_data_root, tmp_path)


def tiny_recipe(tiny_data_root: Path, tmp_path: Path) -> dict:
    """The ``tiny_recipe_dict`` fixture's recipe, writing under ``tmp_path``."""
    return copy.deepcopy({
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "output_root": str(tmp_path / "runs"),
        "dataset": {"name": "synthetic", "root": str(tiny_data_root), "options": TINY_OPTIONS,
                    "num_workers": 0},
        "model": {"arch": "test_resnet"},
        "stages": [
            {"name": "train", "resolution": 32, "epochs": 2, "batch_size": 8,
             "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "cosine",
                                                                    "warmup_epochs": 0.5}},
            {"name": "adapt", "resolution": 48, "epochs": 1, "batch_size": 8,
             "trainable": ["classifier", "last_bn"], "optimizer": {"lr": 0.01},
             "schedule": {"name": "constant"}},
        ],
        "evaluate": {"resolutions": [32, 48], "batch_size": 16},
        "predict": {"split": "test", "batch_size": 16},
        "submission": {"path": str(tmp_path / "submissions" / "tiny.csv")},
    })


@pytest.fixture
def interrupt_training(monkeypatch):
    """``restore = interrupt_training(n)``: the n-th training epoch from now raises
    KeyboardInterrupt, as a Ctrl-C would; ``restore()`` makes training normal again."""
    import fgvc.engine.stage as stage_module

    real = stage_module.train_one_epoch

    def install(n: int):
        calls = {"n": 0}

        def crash(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(stage_module, "train_one_epoch", crash)
        return lambda: monkeypatch.setattr(stage_module, "train_one_epoch", real)

    return install
