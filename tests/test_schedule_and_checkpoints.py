"""Learning-rate schedules and checkpoints that never unpickle code."""

from __future__ import annotations

import math

import pytest
import torch

from fgvc.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fgvc.engine.optim import lr_at
from fgvc.recipes.recipe import ScheduleConfig


def test_warmup_then_cosine_to_min_lr():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr=0.0)
    lrs = [lr_at(s, 10, 5, 1.0, cfg) for s in range(50)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_step_schedule():
    cfg = ScheduleConfig(name="step", every=2, gamma=0.1)
    assert lr_at(19, 10, 6, 1.0, cfg) == pytest.approx(1.0)
    assert lr_at(20, 10, 6, 1.0, cfg) == pytest.approx(0.1)
    assert lr_at(45, 10, 6, 1.0, cfg) == pytest.approx(0.01)


def test_checkpoint_round_trip(tmp_path):
    payload = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "stage": "train"}
    save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert not (tmp_path / "c.pt.tmp").exists()


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects and fgvc never unpickles"):
        load_checkpoint(path)
