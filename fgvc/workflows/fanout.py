"""Fan-out: one submitit job per (dataset, model, seed), submitted as one job array, and the
results gathered back in order, so ``fgvc table3``, ``fgvc sweep`` and the seeds tool print the
same tables as when they run everything here.

Each task's work is an ordinary resumable fgvc run (a finished one is reused, an interrupted one
resumed), so a failed task is resubmitted alone by running the same command for that task only
(``--datasets NAME``, ``--seeds N``): the finished ones are not recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgvc.workflows.launch import JobResources, failure_line, make_executor, run_preemptible

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """``fn(*args)`` as a job named ``name``; ``fn`` must be importable (a module's function)."""

    name: str
    fn: Callable[..., Any]
    args: tuple = ()

    def __call__(self) -> Any:
        return run_preemptible(lambda: self.fn(*self.args))

    def checkpoint(self) -> Any:
        """submitit's requeue protocol: the same task again, which resumes its runs."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


@dataclass
class Gathered:
    """Each task's result by name, and each failed task's one-line reason by name."""

    results: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def jobs_folder(out: Path) -> Path:
    """submitit's pickles and logs for a fan-out writing under ``out``."""
    return out.absolute() / "submitit" / "%j"


def submit(tasks: Sequence[Task], resources: JobResources, job_name: str, folder: Path) -> list:
    """The tasks as one job array; returns their jobs, in order."""
    executor = make_executor(resources, job_name, folder)
    jobs = executor.submit_array(list(tasks))
    for task, job in zip(tasks, jobs, strict=True):
        log.info("%s: job %s (log %s)", task.name, job.job_id, job.paths.stderr)
    return jobs


def gather(tasks: Sequence[Task], jobs: Sequence[Any]) -> Gathered:
    """Wait for every job; a failure is kept by task name, never raised."""
    out = Gathered()
    for task, job in zip(tasks, jobs, strict=True):
        problem = failure_line(job)
        if problem is None:
            out.results[task.name] = job.result()
        else:
            out.failed[task.name] = f"job {job.job_id} failed: {problem} (log: {job.paths.stderr})"
            log.error("%s: %s", task.name, out.failed[task.name])
    return out


def run_tasks(tasks: Sequence[Task], resources: JobResources, job_name: str,
              out: Path) -> Gathered:
    """Submit ``tasks`` as a job array under ``out/submitit/`` and gather their results."""
    return gather(tasks, submit(tasks, resources, job_name, jobs_folder(out)))
