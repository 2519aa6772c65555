"""`fgvc launch`: SLURM parameters, the sbatch preview, and a job run through submitit's local
executor that is pre-empted once, requeues itself and finishes with the weights of an
uninterrupted job."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fgvc.cli import main
from fgvc.errors import UsageError
from fgvc.workflows.launch import JobResources, RunJob, check_resources, time_minutes

submitit = pytest.importorskip("submitit")


def test_time_is_read_as_slurm_writes_it():
    assert time_minutes("24:00:00") == 24 * 60
    assert time_minutes("1-00:30:00") == 24 * 60 + 30
    assert time_minutes("00:00:30") == 1  # rounded up: never shorter than asked
    for bad in ("1:30", "24h", "00:00:00", "10:61:00"):
        with pytest.raises(UsageError, match="--time"):
            time_minutes(bad)


def test_bad_resources_are_named():
    with pytest.raises(UsageError, match="--nodes 2: the local executor"):
        check_resources(JobResources(executor="local", nodes=2))
    with pytest.raises(UsageError, match="--time 00:01:00: shorter than the 120 s warning"):
        check_resources(JobResources(time="00:01:00"))


def test_dry_run_prints_the_sbatch_file(capsys):
    assert main(["launch", "quickstart", "--dry-run", "--nodes", "2", "--gpus-per-node", "4",
                 "--cpus-per-task", "8", "--time", "01:30:00", "--partition", "gpu",
                 "--account", "lab", "--set", "name=qs-launch"]) == 0
    out = capsys.readouterr().out
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --signal=USR1@120",
                 "#SBATCH --job-name=qs-launch", "submitit.core._submit"):
        assert line in out, line
    assert "USR2" not in out  # fgvc's handler checkpoints on SIGUSR1, not submitit's default


def test_slurm_without_srun_is_one_line(capsys):
    assert main(["launch", "quickstart", "--partition", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--executor slurm" in err[0] and "--dry-run" in err[0]


def test_cli_help_does_not_import_submitit():
    code = "import sys; from fgvc.cli import build_parser; build_parser(); " \
           "print('submitit' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@dataclasses.dataclass(frozen=True)
class SignalledOnce(RunJob):
    """The launched job, sent SIGUSR1 (SLURM's warning) in the 5th training step of its first
    attempt only (the marker file says it was sent): epoch 2 of 2, mid-epoch."""

    marker: str = ""

    def __call__(self) -> str:
        import fgvc.engine.loop as loop

        if not Path(self.marker).exists():
            real, calls = loop.set_lr, {"n": 0}

            def set_lr(optimizer, lr):
                calls["n"] += 1
                if calls["n"] == 5:
                    Path(self.marker).write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGUSR1)
                real(optimizer, lr)

            loop.set_lr = set_lr
        return super().__call__()


def _recipe(tiny_recipe_dict: dict, name: str):
    from fgvc.recipes.recipe import parse_recipe

    data = dict(tiny_recipe_dict, name=name, predict=None, submission=None)
    data["stages"] = data["stages"][:1]
    data["evaluate"] = dict(data["evaluate"], resolutions=[32])
    return parse_recipe(data, name)


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "train.pt", weights_only=True)["model"]


def test_preempted_local_job_requeues_and_matches_an_uninterrupted_one(tiny_recipe_dict,
                                                                       tmp_path):
    import cloudpickle

    from fgvc.workflows.launch import make_executor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process imports fgvc only
    res = JobResources(executor="local", time="00:10:00", cpus_per_task=1)
    straight, stopped = _recipe(tiny_recipe_dict, "straight"), _recipe(tiny_recipe_dict, "stopped")
    marker = tmp_path / "signalled"
    executor = make_executor(res, "launch-test", tmp_path / "submitit" / "%j")
    jobs = [executor.submit(RunJob(straight.to_dict(), str(straight.run_dir))),
            executor.submit(SignalledOnce(stopped.to_dict(), str(stopped.run_dir),
                                          marker=str(marker)))]
    results = [job.result() for job in jobs]
    assert results == [str(straight.run_dir), str(stopped.run_dir)]
    assert marker.is_file()  # it was signalled...
    log = Path(jobs[1].paths.stderr).read_text() + Path(jobs[1].paths.stdout).read_text()
    assert "stopped by SIGUSR1 at train epoch 2, step 5" in log  # ...checkpointed mid-epoch,
    assert "Requeued job" in log  # ...and requeued through submitit
    a, b = _weights(straight.run_dir), _weights(stopped.run_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # torchrun's environment was given to the job: it ran as a one-process group
    assert "(1 processes" in (stopped.run_dir / "log.txt").read_text()
    recorded = yaml.safe_load((stopped.run_dir / "recipe.yaml").read_text())
    assert recorded["name"] == "stopped"


GPU_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_gpu_script_parses_and_its_python_scripts_start_without_cuda():
    """benchmarks/gpu.sh runs only on a GPU machine: here, its shell must parse and each Python
    script it calls must import and answer --help with no CUDA device."""
    subprocess.run(["bash", "-n", str(GPU_SCRIPT)], check=True)
    text = GPU_SCRIPT.read_text()
    scripts = sorted(set(re.findall(r"benchmarks/(\w+\.py)", text)))
    assert {"gpu_train.py", "gpu_decode.py", "input_pipeline.py"} <= set(scripts)
    assert "decode_jpeg" in (GPU_SCRIPT.parent / "gpu_decode.py").read_text()  # nvJPEG
    assert "torch.distributed.run --standalone --nproc_per_node 1" in text  # one-GPU NCCL
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    running = {name: subprocess.Popen([sys.executable, str(GPU_SCRIPT.parent / name), "--help"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env) for name in scripts}
    helps = {}
    for name, process in running.items():
        helps[name], _ = process.communicate(timeout=120)
        assert process.returncode == 0 and "usage:" in helps[name], f"{name}: {helps[name][-1000:]}"
    assert "--peak-tflops" in helps["gpu_train.py"]  # MFU printed next to the card's peak


def test_peak_table_matches_card_names():
    sys.path.insert(0, str(GPU_SCRIPT.parent))
    from gpu_train import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert peak_tflops("NVIDIA H200", None) == 989.0
    assert peak_tflops("NVIDIA L40S", None) == 362.0
    assert peak_tflops("Some Card", None) is None
    assert peak_tflops("Some Card", 100.0) == 100.0


def test_python_api_launch_refuses_slurm_without_srun():
    from fgvc.api import launch

    with pytest.raises(UsageError, match="--executor slurm"):
        launch("quickstart", partition="gpu")


def test_cli_local_launch_prints_job_logs_and_run_folder(tiny_recipe_dict, tmp_path, capsys):
    recipe = dict(tiny_recipe_dict, predict=None, submission=None)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["epochs"] = 1
    recipe["evaluate"] = dict(recipe["evaluate"], resolutions=[32])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["launch", str(path), "--executor", "local", "--time", "00:10:00"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "tiny"
    job_id = re.search(r"submitted job (\d+) \(local\)", out).group(1)
    assert f"run folder {run_dir}" in out and f"job {job_id} finished: {run_dir}" in out
    stderr_log = Path(re.search(r"stderr +(\S+)", out).group(1))
    assert stderr_log.is_file() and job_id in stderr_log.name
    assert "run folder" in stderr_log.read_text()  # the run's own log lines are in the job's log
    assert (run_dir / "summary.json").is_file()
