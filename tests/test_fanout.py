"""Fan-out through submitit's local executor: one job per task as a job array, results gathered
in order, a failed job reported by name and resubmitted alone; `fgvc table3` and the seeds tool
with `--executor local`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fgvc.cli import main
from fgvc.workflows.launch import JobResources

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[1]
LOCAL = JobResources(executor="local", time="00:10:00", cpus_per_task=1)


def _square(x: int) -> int:
    return x * x


def _fails_unless(flag: str) -> str:
    if not Path(flag).exists():
        raise ValueError(f"{flag} is missing")
    return "fixed"


def test_failed_task_is_named_and_resubmitted_alone(tmp_path):
    import cloudpickle

    from fgvc.workflows.fanout import Task, run_tasks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process imports fgvc only
    flag = tmp_path / "flag"
    tasks = [Task("two", _square, (2,)), Task("broken", _fails_unless, (str(flag),)),
             Task("three", _square, (3,))]
    gathered = run_tasks(tasks, LOCAL, "fanout-test", tmp_path)
    assert gathered.results == {"two": 4, "three": 9}
    assert list(gathered.failed) == ["broken"]
    line = gathered.failed["broken"]
    assert "failed: ValueError: " in line and f"{flag} is missing" in line and "log: " in line
    assert "\n" not in line
    flag.write_text("")
    again = run_tasks([t for t in tasks if t.name in gathered.failed], LOCAL, "fanout-test",
                      tmp_path)
    assert again.results == {"broken": "fixed"} and not again.failed


def test_table3_reports_a_failed_row_by_name(tmp_path, capsys):
    out = tmp_path / "t3"
    status = main(["table3", "--smoke", "--datasets", "cub200", "--out", str(out), "--executor",
                   "local", "--time", "00:10:00", "--set", "model.arch=no_such_network_xyz"])
    printed = capsys.readouterr().out
    assert status == 1
    assert "cub200: failed: job " in printed
    assert "resubmit it alone with --datasets cub200" in printed
    assert "| CUB-200-2011 |" in (out / "table3.md").read_text()  # the same table, row marked


def test_seeds_tool_fans_out_one_job_per_seed(tiny_recipe_dict, tmp_path):
    recipe = dict(tiny_recipe_dict, predict=None, submission=None)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["epochs"] = 1
    recipe["evaluate"] = dict(recipe["evaluate"], resolutions=[32])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "seeds"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quickstart_seeds.py"),
                           str(path), "--seeds", "0", "1", "--out", str(out), "--executor",
                           "local", "--time", "00:10:00"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mean ± sample sd over seeds 0, 1" in done.stdout
    for seed in (0, 1):
        assert (out / f"tiny-seed{seed}" / "evaluation.json").is_file()
        assert f"seed {seed}: " in done.stderr
    assert (out / "seeds.md").read_text() == done.stdout


def test_sweep_job_failure_is_one_line(tiny_recipe_dict, tmp_path, capsys):
    recipe = dict(tiny_recipe_dict, predict=None, submission=None, sweep_resolutions=[40, 48])
    # data that is not there: found inside the job (a recipe error is refused before submitting)
    recipe["dataset"] = {"name": "cub200", "root": str(tmp_path / "no_such_data")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    status = main(["sweep", str(path), "--out", str(tmp_path / "sw"), "--executor", "local",
                   "--time", "00:10:00"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: sweep tiny: job ")
    assert "no_such_data" in err[0] and "log: " in err[0]
