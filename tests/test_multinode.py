"""Several nodes under torchrun, tried on one machine: two launchers joined by c10d rendezvous on
a loopback endpoint act as two nodes of one process each (gloo). A 2-node run trains to the same
weights as a 1-node run of two processes, predicts as a single process does, generates its data
once, and stops with one line when the ranks see different datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from fgvc.cli import main
from fgvc.inference.predictions import Predictions
from tests.conftest import TINY_OPTIONS, tiny_recipe
from tests.test_distributed import free_port, torchrun

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FGVC_COLLECTIVE_TIMEOUT": "60"}


def launch_nodes(*args: str, nodes: int = 2, cwd: list[Path] | None = None,
                 log_dir: Path | None = None, timeout: float = 300
                 ) -> list[subprocess.CompletedProcess]:
    """``nodes`` torchrun launchers of one process each, as separate machines would start them
    (``cwd``: each launcher's working folder; ``log_dir``: the workers' own output goes to
    files there, apart from the launchers')."""
    logs = ["--log-dir", str(log_dir), "--redirects", "3"] if log_dir else []
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
               "--nproc_per_node", "1", "--rdzv_backend", "c10d",
               "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "multinode", *logs,
               "-m", "fgvc", *args]
    launchers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=ENV, cwd=(cwd or [None] * nodes)[i])
                 for i in range(nodes)]
    results = []
    for launcher in launchers:
        out, err = launcher.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, launcher.returncode, out, err))
    return results


def write_recipe(tmp_path: Path, data_root: Path, name: str) -> Path:
    """One training stage of one epoch at 32 px, three steps of 4 images per process."""
    recipe = tiny_recipe(data_root, tmp_path)
    recipe.update(name=name, stages=recipe["stages"][:1], evaluate={"resolutions": [32],
                                                                    "batch_size": 16})
    recipe["stages"][0].update(epochs=1, batch_size=4)
    recipe["submission"] = {"path": str(tmp_path / "submissions" / f"{name}.csv")}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "train.pt", weights_only=True)["model"]


def test_two_nodes_train_and_predict_as_one_node_of_two_processes(tmp_path):
    data_root = tmp_path / "data" / "synthetic"  # not there yet: rank 0 generates it once
    results = launch_nodes("run", str(write_recipe(tmp_path, data_root, "nodes")))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(r.stderr for r in results)
    assert logs.count("generating the embedded synthetic dataset") == 1, logs[-3000:]
    result = torchrun("run", str(write_recipe(tmp_path, data_root, "local")))
    assert result.returncode == 0, result.stderr[-3000:]

    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["local", "nodes"]  # one folder each
    summary = json.loads((runs / "nodes" / "summary.json").read_text())
    assert (summary["processes"], summary["nodes"]) == (2, 2)
    assert json.loads((runs / "local" / "summary.json").read_text())["nodes"] == 1
    two_nodes, one_node = final_weights(runs / "nodes"), final_weights(runs / "local")
    assert two_nodes.keys() == one_node.keys()
    for key in one_node:
        assert torch.equal(two_nodes[key], one_node[key]), key
    assert [r["stage"] for r in map(json.loads, (runs / "nodes" / "metrics.jsonl")
                                    .read_text().splitlines())] == ["train"]  # written once

    # The run's test predictions, sharded over the two nodes, are a single process's.
    assert main(["predict", str(runs / "nodes"), "--out", str(tmp_path / "single")]) == 0
    single = Predictions.load(tmp_path / "single")
    sharded = Predictions.load(runs / "nodes" / "predictions")
    assert sharded.meta["processes"] == 2
    assert sharded.ids == single.ids
    np.testing.assert_allclose(sharded.probs.astype(np.float32),
                               single.probs.astype(np.float32), atol=2e-3)


def test_nodes_that_see_different_datasets_stop_with_one_line(tmp_path):
    """Each launcher reads ``synthetic`` relative to its own folder, as nodes without a shared
    filesystem would; the second node's copy lists one training image fewer."""
    from fgvc.datasets import load_dataset

    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        load_dataset("synthetic", folder / "synthetic", TINY_OPTIONS)
    listing = folders[1] / "synthetic" / "train.csv"
    listing.write_text("".join(listing.read_text().splitlines(keepends=True)[:-1]))
    recipe = write_recipe(tmp_path, Path("synthetic"), "differ")
    results = launch_nodes("run", str(recipe), cwd=folders, log_dir=tmp_path / "logs",
                           timeout=120)
    assert all(r.returncode != 0 for r in results)
    workers = [p.read_text() for p in sorted((tmp_path / "logs").rglob("stderr.log"))]
    assert len(workers) == 2
    for stderr in workers:  # each process: one line, no traceback
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert errors == ["error: dataset 'synthetic' at synthetic: rank(s) 1 see other contents "
                          "than rank 0 (several nodes must share one filesystem for the data; "
                          "check the path on each node)"], stderr[-2000:]
        assert "Traceback" not in stderr
    assert not (tmp_path / "a" / "runs").exists() and not (tmp_path / "runs" / "differ").exists()
