"""Reliability: pre-emption and mid-epoch resume (bit-identical), kill -9 during a checkpoint
write, full disks, torn files, changed recipes on resume, one writer per run folder,
concurrent first runs, non-finite losses."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fgvc.cli import main

REPO = Path(__file__).resolve().parents[1]


def one_stage(recipe: dict, epochs: int = 2) -> dict:
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["epochs"] = epochs
    recipe["predict"] = recipe["submission"] = None
    recipe["evaluate"]["resolutions"] = [32]
    return recipe


def write_recipe(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "train.pt", weights_only=True)["model"]


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "epoch_seconds", "images_per_second")}
            for r in rows]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_data_root):
    """An uninterrupted two-epoch run: the reference every interrupted run must equal."""
    from conftest import tiny_recipe

    tmp = tmp_path_factory.mktemp("straight")
    recipe = one_stage(tiny_recipe(tiny_data_root, tmp))
    assert main(["run", write_recipe(tmp, recipe)]) == 0
    run_dir = tmp / "runs" / "tiny"
    return {"weights": final_weights(run_dir), "metrics": metric_rows(run_dir),
            "checkpoint_bytes": (run_dir / "checkpoints" / "train.pt").stat().st_size}


def test_sigterm_mid_epoch_then_resume_is_bit_identical(tiny_recipe_dict, tmp_path, monkeypatch,
                                                        capsys, straight_run):
    import fgvc.engine.loop as loop

    tiny_recipe_dict["dataset"]["num_workers"] = 2  # draws independent of the loading processes
    recipe = write_recipe(tmp_path, one_stage(tiny_recipe_dict))
    real_set_lr, calls = loop.set_lr, {"n": 0}

    def set_lr_then_signal(optimizer, lr):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2 of 3 steps each: SIGTERM arrives during its 2nd step,
            # to every process, as SLURM sends it (the loader workers included)
            workers = multiprocessing.active_children()
            assert workers
            for worker in workers:
                os.kill(worker.pid, signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        real_set_lr(optimizer, lr)

    monkeypatch.setattr(loop, "set_lr", set_lr_then_signal)
    assert main(["run", recipe]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "tiny"
    assert f"stopped by SIGTERM at train epoch 2, step 5; `fgvc resume {run_dir}`" in err
    state = torch.load(run_dir / "checkpoints" / "train_last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["progress"]["epoch_progress"]["batches"] == 2
    assert (run_dir / "checkpoints" / "train_last.prev.pt").is_file()  # the epoch-1 one, kept

    monkeypatch.setattr(loop, "set_lr", real_set_lr)
    assert main(["resume", str(run_dir)]) == 0
    assert_bit_identical(straight_run["weights"], final_weights(run_dir))
    assert metric_rows(run_dir) == straight_run["metrics"]
    assert not (run_dir / "checkpoints" / "train_last.pt").exists()


def test_signal_outside_training_stops_at_once():
    from fgvc.engine.preemption import Preempted, handle_signals

    with pytest.raises(Preempted) as stopped, handle_signals(Path("runs/x")):
        os.kill(os.getpid(), signal.SIGUSR1)
    assert stopped.value.exit_status == 128 + signal.SIGUSR1
    assert "fgvc resume runs/x" in str(stopped.value)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGUSR1))


KILL_DURING_WRITE = """
import os, signal, sys
import fgvc.io.atomic as atomic
import fgvc.engine.stage as stage
from fgvc.cli import main

real_save, count = stage.save_checkpoint, {"n": 0}

def save(path, payload, **kw):
    if "progress" in payload:
        count["n"] += 1
        if count["n"] == 5:  # a mid-epoch checkpoint of epoch 2: die half-way through writing it
            def die(f, data):
                f.write(bytes(data)[: len(data) // 2]); f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            atomic.write_chunk = die
    real_save(path, payload, **kw)

stage.save_checkpoint = save
sys.exit(main(["run", sys.argv[1]]))
"""


def test_kill_9_during_a_mid_epoch_checkpoint_write_then_resume(tiny_recipe_dict, tmp_path,
                                                               straight_run):
    recipe = one_stage(tiny_recipe_dict)
    recipe["checkpoint"] = {"every_minutes": 1e-9}  # a mid-epoch checkpoint after every step
    path = write_recipe(tmp_path, recipe)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, path], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    checkpoints = tmp_path / "runs" / "tiny" / "checkpoints"
    assert list(checkpoints.glob(".train_last.pt.tmp-*"))  # the torn write, never renamed
    assert main(["run", path, "--resume"]) == 0
    assert not list(checkpoints.glob(".*.tmp-*"))
    # Mid-epoch checkpoints change nothing: the same weights as the uninterrupted run.
    assert_bit_identical(straight_run["weights"], final_weights(tmp_path / "runs" / "tiny"))


def test_disk_full_during_a_checkpoint_then_resume(tiny_recipe_dict, tmp_path, monkeypatch,
                                                   capsys, straight_run):
    import fgvc.io.atomic as atomic

    recipe = write_recipe(tmp_path, one_stage(tiny_recipe_dict))
    real, writes = atomic.write_chunk, {"n": 0}
    checkpoints = tmp_path / "runs" / "tiny" / "checkpoints"

    def full_after_first_checkpoint(f, data):
        if Path(f.name).name.startswith(".train_last.pt") and (checkpoints / "train_last.pt").exists():
            writes["n"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(f, data)

    monkeypatch.setattr(atomic, "write_chunk", full_after_first_checkpoint)
    assert main(["run", recipe]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write {checkpoints / 'train_last.pt'}: no space left on device"
    assert "Traceback" not in "\n".join(err) and writes["n"] >= 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["train_last.pt"]  # no temp file
    assert torch.load(checkpoints / "train_last.pt", weights_only=True)["epoch"] == 1

    monkeypatch.setattr(atomic, "write_chunk", real)  # space freed
    assert main(["run", recipe, "--resume"]) == 0
    assert_bit_identical(straight_run["weights"], final_weights(tmp_path / "runs" / "tiny"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real file system that can fill up: tmpfs, which needs root (CI containers often are)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_real_disk_full_on_a_tmpfs(tiny_recipe_dict, tmp_path, small_tmpfs, capsys, straight_run):
    recipe = one_stage(tiny_recipe_dict)
    recipe["output_root"] = str(small_tmpfs / "runs")
    path = write_recipe(tmp_path, recipe)
    # Leave room for the first epoch's checkpoint (model + SGD momentum) but not a second.
    checkpoint = 2 * straight_run["checkpoint_bytes"]
    stats = os.statvfs(small_tmpfs)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - int(1.6 * checkpoint)))
    assert main(["run", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    checkpoints = small_tmpfs / "runs" / "tiny" / "checkpoints"
    assert err.startswith("error: cannot write ") and err.endswith(": no space left on device")
    assert not list(checkpoints.glob(".*.tmp-*"))
    assert torch.load(checkpoints / "train_last.pt", weights_only=True)["epoch"] == 1

    filler.unlink()
    assert main(["run", path, "--resume"]) == 0
    assert_bit_identical(straight_run["weights"], final_weights(small_tmpfs / "runs" / "tiny"))


def test_truncated_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    from fgvc.engine.checkpoint import load_checkpoint, previous_path, save_checkpoint

    path = tmp_path / "train_last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000.0)}, keep_previous=True)
    save_checkpoint(path, {"epoch": 2, "w": torch.arange(1000.0)}, keep_previous=True)
    assert torch.load(previous_path(path), weights_only=True)["epoch"] == 1
    path.write_bytes(path.read_bytes()[:500])  # truncated
    assert load_checkpoint(path)["epoch"] == 1
    assert f"cannot load checkpoint {path}" in caplog.text
    assert f"falling back to the previous checkpoint {previous_path(path)}" in caplog.text


def test_a_refused_pickled_checkpoint_is_one_clear_line(tmp_path):
    import argparse

    from fgvc.engine.checkpoint import CheckpointError, load_checkpoint

    torch.save({"model": argparse.Namespace(a=1)}, tmp_path / "evil.pt")  # an arbitrary class
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(refused.value)
    assert "\n" not in message and "pickled Python objects" in message and "evil.pt" in message


def test_atomic_write_failure_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    import fgvc.io.atomic as atomic

    target = tmp_path / "evaluation.json"
    atomic.atomic_write(target, '{"old": 1}\n')

    def broken(f, data):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic, "write_chunk", broken)
    with pytest.raises(atomic.WriteError, match=f"cannot write {target}: input/output error"):
        atomic.atomic_write(target, '{"new": 2}\n')
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]


def test_a_corrupt_run_file_is_named(tiny_recipe_dict, tmp_path, interrupt_training, capsys):
    recipe = write_recipe(tmp_path, one_stage(tiny_recipe_dict))
    restore = interrupt_training(2)
    assert main(["run", recipe]) == 130
    restore()
    run_dir = tmp_path / "runs" / "tiny"
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"stage": "tr')  # torn by an old version
    assert main(["run", recipe, "--resume"]) == 2
    assert f"error: {metrics}, line 2 is corrupt" in capsys.readouterr().err
    (run_dir / "recipe.yaml").write_text("name: [unclosed\n")
    assert main(["resume", str(run_dir)]) == 2
    assert f"{run_dir / 'recipe.yaml'} is corrupt" in capsys.readouterr().err


def test_resume_with_a_changed_recipe_is_refused_unless_allowed(tiny_recipe_dict, tmp_path,
                                                                interrupt_training, capsys):
    data = one_stage(tiny_recipe_dict)
    recipe = write_recipe(tmp_path, data)
    restore = interrupt_training(2)
    assert main(["run", recipe]) == 130
    restore()
    run_dir = tmp_path / "runs" / "tiny"

    assert main(["run", recipe, "--resume", "--set", "stages.train.epochs=3",
                 "--set", "evaluate.batch_size=4"]) == 2
    err = capsys.readouterr().err
    assert "the recipe differs from the one" in err
    assert "stages.train.epochs: the run has 2, this recipe 3" in err
    assert "evaluate.batch_size: the run has 16, this recipe 4" in err
    assert "--allow-changes evaluate.batch_size stages.train.epochs" in err
    assert not (run_dir / "checkpoints" / "train.pt").exists()  # nothing ran

    assert main(["run", recipe, "--resume", "--set", "evaluate.batch_size=4",
                 "--allow-changes", "evaluate"]) == 0
    recorded = json.loads((run_dir / "recipe_changes.jsonl").read_text())
    assert recorded["changes"] == {"evaluate.batch_size": {"run": 16, "now": 4}}
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["evaluate"]["batch_size"] == 4
    assert "resuming with a changed recipe: evaluate.batch_size 16 -> 4" in \
        (run_dir / "log.txt").read_text()


def test_one_writer_per_run_folder(tiny_recipe_dict, tmp_path, capsys, caplog):
    from fgvc.io.lock import FolderLock

    recipe = write_recipe(tmp_path, one_stage(tiny_recipe_dict))
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    with FolderLock(run_dir):  # as if another process were running it
        assert main(["run", recipe, "--resume"]) == 2
        err = capsys.readouterr().err
        assert main(["run", recipe, "--force"]) == 2  # nor is it deleted from under that run
        assert run_dir.is_dir() and "is in use by pid" in capsys.readouterr().err
    assert f"{run_dir} is in use by pid {os.getpid()}" in err and "one process per run folder" in err

    # A lock file left by a process that died is taken over, with a log line.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket

    (run_dir / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    with FolderLock(run_dir) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"taking over the stale lock {run_dir / '.lock'} of pid {dead}" in caplog.text
    assert not (run_dir / ".lock").exists()


def test_two_concurrent_first_runs_of_one_recipe(tiny_recipe_dict, tmp_path):
    data = one_stage(tiny_recipe_dict, epochs=1)
    data["dataset"]["root"] = str(tmp_path / "fresh" / "synthetic")  # generated by both at once
    recipe = write_recipe(tmp_path, data)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "fgvc", "run", recipe], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], [r[1][-2000:] for r in results]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["tiny", "tiny-2"]
    for name in runs:
        assert (tmp_path / "runs" / name / "checkpoints" / "train.pt").is_file()
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == [".synthetic.lock",
                                                                     "synthetic"]


def test_resume_after_a_kill_during_data_generation(tiny_recipe_dict, tmp_path):
    data = one_stage(tiny_recipe_dict, epochs=1)
    root = tmp_path / "fresh" / "synthetic"
    data["dataset"]["root"] = str(root)
    recipe = write_recipe(tmp_path, data)
    # What a generator killed half-way leaves: its staging folder, no dataset, no run folder.
    (root.parent / ".synthetic.partial-999999" / "images").mkdir(parents=True)
    assert main(["run", recipe, "--resume"]) == 0
    assert (tmp_path / "runs" / "tiny" / "checkpoints" / "train.pt").is_file()
    assert not list(root.parent.glob(".synthetic.partial-*"))


def test_non_finite_loss_names_stage_epoch_step_and_lr(tiny_recipe_dict, tmp_path, monkeypatch,
                                                       capsys):
    import torch.nn.functional as F

    real, calls = F.cross_entropy, {"n": 0}

    def diverging(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(F, "cross_entropy", diverging)
    recipe = write_recipe(tmp_path, one_stage(tiny_recipe_dict))
    assert main(["run", recipe]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: stage train, epoch 2/2: loss is nan at step 4 "
                              "(learning rate ")
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "train_last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the last checkpoint is kept


def test_a_torn_evaluation_json_is_named(tmp_path):
    from fgvc.io.atomic import RunFileError, read_json

    path = tmp_path / "evaluation.json"
    path.write_text('{"before_adaptation": {"32": {"top1": 5')
    with pytest.raises(RunFileError, match=f"{path} is corrupt .*; delete it and run"):
        read_json(path)


def test_adapt_stage_resumes_from_a_checkpoint_of_what_it_trains(tiny_recipe_dict, tmp_path,
                                                                  interrupt_training, capsys):
    """An adapt stage's resume checkpoint keeps what the stage trains (classifier, last BN)
    and every buffer, with a digest of the frozen weights: resuming from it gives the
    uninterrupted run's weights bit for bit, and a changed frozen part is refused in one line."""
    tiny_recipe_dict["stages"][1]["epochs"] = 2
    tiny_recipe_dict["predict"] = tiny_recipe_dict["submission"] = None
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 0
    straight = tmp_path / "runs" / "tiny" / "checkpoints"

    restore = interrupt_training(4)  # train epochs 1-2, adapt epoch 1, then adapt epoch 2
    assert main(["run", recipe]) == 130
    restore()
    checkpoints = tmp_path / "runs" / "tiny-2" / "checkpoints"
    state = torch.load(checkpoints / "adapt_last.pt", weights_only=True)
    full = torch.load(straight / "adapt.pt", weights_only=True)["model"]
    assert state["epoch"] == 1 and "frozen_digest" in state
    assert "fc.weight" in state["model"] and "layer4.0.bn2.running_mean" in state["model"]
    assert "layer1.0.conv1.weight" not in state["model"] and len(state["model"]) < len(full)

    from fgvc.engine.checkpoint import load_checkpoint, save_checkpoint

    trained = load_checkpoint(checkpoints / "train.pt")
    changed = {**trained, "model": {**trained["model"]}}
    changed["model"]["layer1.0.conv1.weight"] = changed["model"]["layer1.0.conv1.weight"] + 1
    save_checkpoint(checkpoints / "train.pt", changed)  # other weights, not a damaged file
    capsys.readouterr()
    assert main(["run", recipe, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapt_last.pt: saved for other frozen weights" in err[0]

    save_checkpoint(checkpoints / "train.pt", trained)
    assert main(["run", recipe, "--resume"]) == 0
    assert_bit_identical(full, torch.load(checkpoints / "adapt.pt", weights_only=True)["model"])
