"""Elastic restarts under ``torchrun --max-restarts``: a worker killed mid-epoch makes torchrun
restart the group, which resumes the run from its last mid-epoch checkpoint and ends with the
weights of an uninterrupted run; a rank that hangs is named by the others within the collective
timeout instead of leaving them waiting (two CPU processes, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from tests.conftest import tiny_recipe
from tests.test_distributed import free_port

# Runs ``fgvc`` with a fault: at its ``FAULT_STEP``-th step, rank 1 of the first attempt kills
# itself (``kill``) or stops answering (``hang``), from inside the training step loop.
WORKER = '''
import os, signal, sys, time
import fgvc.engine.stage as stage
from fgvc.cli import main

real, steps = stage.MidEpochSaver.after_step, [0]

def after_step(self, epoch, progress):
    steps[0] += 1
    first_attempt = os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
    if steps[0] == int(os.environ["FAULT_STEP"]) and os.environ["RANK"] == "1" and first_attempt:
        if os.environ["FAULT"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ["FAULT"] == "hang":
            time.sleep(600)
    return real(self, epoch, progress)

stage.MidEpochSaver.after_step = after_step
sys.exit(main(sys.argv[1:]))
'''


def write_recipe(tmp_path: Path, tiny_data_root: Path, name: str) -> Path:
    """One epoch of six steps of 2 images per process, a mid-epoch checkpoint after each."""
    recipe = tiny_recipe(tiny_data_root, tmp_path)
    recipe.update(name=name, stages=recipe["stages"][:1], checkpoint={"every_minutes": 1e-6},
                  evaluate={"resolutions": [32], "batch_size": 16}, predict=None,
                  submission=None)
    recipe["stages"][0].update(epochs=1, batch_size=2)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def launch(tmp_path: Path, recipe: Path, fault: str = "none", max_restarts: int = 0,
           timeout_s: int = 60) -> subprocess.CompletedProcess:
    """torchrun with two processes running WORKER; each worker's output lands in
    ``tmp_path/logs/<attempt>/<rank>/stderr.log``."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}",
               "--max-restarts", str(max_restarts), "--monitor-interval", "0.1",
               "--log-dir", str(tmp_path / "logs" / recipe.stem), "--redirects", "3",
               str(worker), "run", str(recipe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAULT": fault, "FAULT_STEP": "4",
           "FGVC_COLLECTIVE_TIMEOUT": str(timeout_s),
           # a store of its own per attempt, as docs/guide/distributed.md says (torch#135712)
           "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def worker_log(tmp_path: Path, recipe: str, attempt: int, rank: int) -> str:
    """A worker's stderr (torchrun files it under a run id folder of its own)."""
    [path] = (tmp_path / "logs" / recipe).glob(f"*/attempt_{attempt}/{rank}/stderr.log")
    return path.read_text()


def final_weights(tmp_path: Path, name: str) -> dict[str, torch.Tensor]:
    path = tmp_path / "runs" / name / "checkpoints" / "train.pt"
    return torch.load(path, weights_only=True)["model"]


def test_killed_worker_restarts_and_resumes_bit_identically(tmp_path, tiny_data_root):
    result = launch(tmp_path, write_recipe(tmp_path, tiny_data_root, "whole"))
    assert result.returncode == 0, result.stderr[-3000:]
    result = launch(tmp_path, write_recipe(tmp_path, tiny_data_root, "killed"), fault="kill",
                    max_restarts=1)
    assert result.returncode == 0, result.stderr[-3000:]

    assert "failed (exitcode: -9) local_rank: 1" in result.stderr  # torchrun saw the kill
    restarted = worker_log(tmp_path, "killed", 1, 0)
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in worker_log(tmp_path, "killed", 0, 0)
    assert "train: resuming 3 batch(es) into epoch 1 from" in restarted, restarted[-3000:]
    assert not (tmp_path / "runs" / "killed-2").exists()  # the restart continued its folder
    whole, killed = final_weights(tmp_path, "whole"), final_weights(tmp_path, "killed")
    assert whole.keys() == killed.keys()
    for key in whole:
        assert torch.equal(whole[key], killed[key]), key


def test_hung_rank_is_named_within_the_collective_timeout(tmp_path, tiny_data_root):
    began = time.monotonic()
    result = launch(tmp_path, write_recipe(tmp_path, tiny_data_root, "hung"), fault="hang",
                    timeout_s=3)
    assert result.returncode != 0
    assert time.monotonic() - began < 120  # not the 600 s rank 1 sleeps
    errors = [line for line in worker_log(tmp_path, "hung", 0, 0).splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: rank 0: lost rank(s) 1 of 2 (a process died or hung; collectives wait at most "
        "3 s, FGVC_COLLECTIVE_TIMEOUT)"), worker_log(tmp_path, "hung", 0, 0)[-3000:]
