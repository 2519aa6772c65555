"""Data-parallel runs under torchrun (two CPU processes, gloo): one run folder written once,
every image counted once, and sharded prediction identical to a single process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import yaml

from fgvc.cli import main
from fgvc.datasets.synthetic import read_test_labels
from fgvc.engine.distributed import ShardSampler
from fgvc.inference.predictions import Predictions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "fgvc.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_shards_cover_every_index_once():
    shards = [list(ShardSampler(11, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(11))
    assert [len(ShardSampler(11, rank, 3)) for rank in range(3)] == [4, 4, 3]


def test_two_process_run(tiny_recipe_dict, tiny_data_root, tmp_path):
    tiny_recipe_dict["stages"][0]["batch_size"] = 4
    tiny_recipe_dict["evaluate"]["batch_size"] = 5  # shards of 6 and 6 in uneven batches
    # Training options compose with torchrun (DDP no_sync under accumulation, sharded sampler).
    tiny_recipe_dict["stages"][0].update(ema={"decay": 0.9}, mixup={}, accumulate=2,
                                         sampler={"name": "class_balanced"})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    result = torchrun("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny"
    assert not (tmp_path / "runs" / "tiny-2").exists()  # one folder, chosen once
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("train", 1), ("train", 2), ("adapt", 1)]
    assert all(0 <= r["val_ema_top1"] <= 100 for r in rows[:2])
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    for phase in evaluation.values():
        assert all(m["images"] == 12 for m in phase.values())  # every val image, once
    assert json.loads((run_dir / "summary.json").read_text())["processes"] == 2
    preds = Predictions.load(run_dir / "predictions")
    assert sorted(preds.ids) == sorted(read_test_labels(tiny_data_root))

    # Sharded prediction with the same weights gives the single-process probabilities.
    assert main(["predict", str(run_dir), "--out", str(tmp_path / "single")]) == 0
    result = torchrun("predict", str(run_dir), "--out", str(tmp_path / "sharded"))
    assert result.returncode == 0, result.stderr[-3000:]
    single, sharded = (Predictions.load(tmp_path / f) for f in ("single", "sharded"))
    assert (single.meta["processes"], sharded.meta["processes"]) == (1, 2)  # really sharded
    assert sharded.ids == single.ids
    np.testing.assert_allclose(sharded.probs.astype(np.float32), single.probs.astype(np.float32),
                               atol=2e-3)
    # One process under torchrun takes the process-group path too (what a one-GPU NCCL smoke
    # run relies on) and gives the same probabilities.
    result = torchrun("predict", str(run_dir), "--out", str(tmp_path / "one"), processes=1)
    assert result.returncode == 0, result.stderr[-3000:]
    one = Predictions.load(tmp_path / "one")
    assert one.ids == single.ids
    np.testing.assert_allclose(one.probs.astype(np.float32), single.probs.astype(np.float32),
                               atol=2e-3)


def test_one_process_under_torchrun_joins_a_process_group(monkeypatch):
    import torch
    import torch.distributed as dist

    from fgvc.engine.distributed import current, init_distributed

    assert not current().enabled  # a plain process has no group
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    try:
        env = init_distributed(torch.device("cpu"))
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert (env.enabled, env.world_size, env.rank) == (True, 1, 0)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
