"""``fgvc launch``: a run submitted as a SLURM job (or a local one) through submitit.

The job has one task per GPU, each with the environment torchrun would give it (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, from submitit's
``TorchDistributedEnvironment``), so fgvc's ordinary distributed path runs unchanged. SLURM is
asked to send SIGUSR1 ``signal_delay_s`` before the time limit; fgvc's pre-emption handler
(``fgvc.engine.preemption``) turns that, or a SIGTERM, into a mid-epoch checkpoint, and the
job then hands over to submitit's requeue protocol (the callable's ``checkpoint()``): the
requeued job runs the same callable again, which resumes the same run folder. submitit's own
timeout signal (USR2) is forwarded as SIGUSR1, so it also checkpoints mid-epoch.

submitit is imported where used: the CLI stays light, and the extra is optional
(``pip install 'fgvc[slurm]'``).
"""

from __future__ import annotations

import math
import re
import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fgvc.errors import FgvcError, UsageError

T = TypeVar("T")
EXECUTORS = ("slurm", "local")
PREEMPT_SIGNAL = "USR1"  # what fgvc's handler checkpoints on; SLURM sends it before the limit


class JobFailedError(FgvcError, RuntimeError):
    """A submitted job ended with an error; the message names the job and its log."""


@dataclass(frozen=True)
class JobResources:
    """What a job asks for; ``time`` is SLURM's ``HH:MM:SS`` (or ``D-HH:MM:SS``)."""

    executor: str = "slurm"
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 10
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    signal_delay_s: int = 120


def time_minutes(text: str) -> int:
    """``[D-]HH:MM:SS`` as whole minutes, rounded up (submitit takes minutes)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):([0-5]?\d):([0-5]?\d)", text.strip())
    if not match:
        raise UsageError(f"--time {text!r}: expected HH:MM:SS (or D-HH:MM:SS), e.g. 24:00:00")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = math.ceil((((days * 24 + hours) * 60 + minutes) * 60 + seconds) / 60)
    if total <= 0:
        raise UsageError(f"--time {text!r}: must be longer than zero")
    return total


def check_resources(res: JobResources) -> None:
    """One line naming the option that is wrong."""
    if res.executor not in EXECUTORS:
        raise UsageError(f"--executor {res.executor!r}: expected one of {', '.join(EXECUTORS)}")
    for flag, value in (("--nodes", res.nodes), ("--gpus-per-node", res.gpus_per_node),
                        ("--cpus-per-task", res.cpus_per_task)):
        if value < 1:
            raise UsageError(f"{flag} {value}: expected a whole number >= 1")
    if res.executor == "local" and res.nodes != 1:
        raise UsageError(f"--nodes {res.nodes}: the local executor runs on this machine only "
                         "(--nodes 1)")
    minutes = time_minutes(res.time)
    if res.signal_delay_s >= minutes * 60:
        raise UsageError(f"--time {res.time}: shorter than the {res.signal_delay_s} s warning "
                         "before the limit")


def slurm_parameters(res: JobResources, job_name: str) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters: one task per GPU, SIGUSR1 before the limit."""
    params: dict[str, Any] = {
        "job_name": job_name, "time": time_minutes(res.time), "nodes": res.nodes,
        "ntasks_per_node": res.gpus_per_node, "gpus_per_node": res.gpus_per_node,
        "cpus_per_task": res.cpus_per_task, "signal_delay_s": res.signal_delay_s,
        # replaces submitit's default USR2: fgvc's handler checkpoints on SIGUSR1
        "additional_parameters": {"signal": f"{PREEMPT_SIGNAL}@{res.signal_delay_s}"},
    }
    if res.partition:
        params["partition"] = res.partition
    if res.account:
        params["account"] = res.account
    return params


def local_parameters(res: JobResources) -> dict[str, Any]:
    """submitit's LocalExecutor parameters: the same tasks, on this machine."""
    return {"timeout_min": time_minutes(res.time), "tasks_per_node": res.gpus_per_node,
            "gpus_per_node": res.gpus_per_node, "signal_delay_s": res.signal_delay_s}


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor needs submitit: pip install 'fgvc[slurm]'") from None
    return submitit


def make_executor(res: JobResources, job_name: str, folder: Path) -> Any:
    """A submitit executor writing its pickles and logs under ``folder``."""
    check_resources(res)
    submitit = require_submitit()
    if res.executor == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(**local_parameters(res))
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as err:  # no srun on this machine
        raise UsageError(f"--executor slurm: {err} (--dry-run prints the job without "
                         "submitting; --executor local runs it here)") from None
    executor.update_parameters(**slurm_parameters(res, job_name))
    return executor


def sbatch_script(res: JobResources, job_name: str, folder: Path) -> str:
    """The sbatch file submitit would write, without submitting (``--dry-run``). Rendered by
    submitit's own writer, so the preview cannot drift from what a submission sends."""
    check_resources(res)
    require_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, **slurm_parameters(res, job_name))


def _forward_as_preemption(_signum: int, _frame: Any) -> None:
    """submitit's timeout signal, handed to fgvc's handler so that it checkpoints mid-epoch."""
    signal.raise_signal(getattr(signal, f"SIG{PREEMPT_SIGNAL}"))


def run_preemptible(work: Callable[[], T], run_dir: Path | None = None) -> T:
    """``work()`` inside a submitit job: torchrun's environment exported, and a pre-emption
    signal (SIGUSR1, SIGTERM, or submitit's own, forwarded) turned by fgvc's handler into a
    checkpoint, after which submitit's handler calls the job's ``checkpoint()`` and requeues
    it (the main task), or the task exits as pre-empted (the others)."""
    import submitit

    from fgvc.engine.preemption import Preempted, handle_signals

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    timeout_signal = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
    requeue = signal.getsignal(timeout_signal)  # submitit's checkpoint-and-requeue
    signal.signal(timeout_signal, _forward_as_preemption)
    try:
        with handle_signals(run_dir):  # a signal before training starts stops at once
            return work()
    except Preempted as stop:
        print(stop, file=sys.stderr, flush=True)  # in the job's log: where it stopped
        signal.signal(timeout_signal, requeue)
        if callable(requeue):
            requeue(timeout_signal, None)
        raise SystemExit(stop.exit_status) from None
    finally:
        signal.signal(timeout_signal, requeue)


@dataclass(frozen=True)
class RunJob:
    """The callable a job runs: the recipe (plain data) in ``run_dir``, resumed if it exists.

    ``checkpoint()`` is submitit's requeue protocol: the requeued job calls the same object
    again, and since the run folder now exists it resumes it."""

    recipe: dict
    run_dir: str

    def __call__(self) -> str:
        from fgvc.recipes.recipe import parse_recipe
        from fgvc.workflows.pipeline import run_recipe

        def work() -> str:
            run_recipe(parse_recipe(self.recipe, f"{self.run_dir} (launched)"), resume=True,
                       run_dir=Path(self.run_dir))
            return self.run_dir

        return run_preemptible(work, Path(self.run_dir))

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


@dataclass(frozen=True)
class Launched:
    job: Any
    job_id: str
    stdout: Path
    stderr: Path
    run_dir: Path


def plan_run_dir(recipe: Any, resume: bool) -> Path:
    """The run folder the job will write: the latest of the recipe's with ``resume``, else a
    new one (``runs/<name>-2`` beside an earlier run), as ``fgvc run`` chooses."""
    from fgvc.workflows.pipeline import choose_run_dir

    return choose_run_dir(recipe, resume, force=False)


def logs_folder(recipe: Any) -> Path:
    """submitit's folder of pickles and logs, ``%j`` standing for the job id."""
    return Path(recipe.output_root).absolute() / "submitit" / "%j"


def launch(recipe: Any, res: JobResources, resume: bool = False) -> Launched:
    """Submit ``recipe`` (a ``Recipe``) as one job; returns at once."""
    from fgvc.recipes.recipe import Recipe

    if not isinstance(recipe, Recipe):
        raise UsageError(f"{recipe.name}: fgvc launch takes a run recipe, not an ensemble")
    executor = make_executor(res, recipe.name, logs_folder(recipe))
    run_dir = plan_run_dir(recipe, resume)
    job = executor.submit(RunJob(recipe.to_dict(), str(run_dir)))
    return Launched(job, str(job.job_id), Path(job.paths.stdout), Path(job.paths.stderr),
                    run_dir)


def failure_line(job: Any) -> str | None:
    """None for a job that finished, else the last line of its error (its traceback is in its
    stderr log)."""
    error = job.exception()
    if error is None:
        return None
    # submitit's message: a header, the job's traceback between two rules of dashes, then the
    # log paths; the traceback's last line is the error itself
    text = str(error)
    parts = re.split(r"^-{5,}\s*$", text, flags=re.M)
    body = parts[1] if len(parts) >= 3 else text
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def wait_for(launched: Launched) -> str:
    """Block until the job ends; its result (the run folder), or ``JobFailedError``."""
    problem = failure_line(launched.job)
    if problem is not None:
        raise JobFailedError(f"job {launched.job_id} failed: {problem} (log: "
                             f"{launched.stderr})")
    return launched.job.result()
