"""``fgvc report RUN``: rebuild a run's ``report.md`` and its figures from what the run saved
(recipe, summary, evaluation, metrics, predictions), without training or predicting again.

The per-class and test-split sections score saved predictions against the dataset's labels;
when the dataset is no longer where the recipe says, those sections are left out with a
warning and the rest of the report is rebuilt.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fgvc.datasets.base import DatasetError
from fgvc.runfolder import RunFolder, RunNotFinishedError

log = logging.getLogger(__name__)


def rebuild_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` of a finished run again; returns its path."""
    from fgvc.recipes.splits import load_recipe_dataset
    from fgvc.report import write_report

    folder = RunFolder.open(run_dir)
    recipe = folder.read_recipe()
    summary = folder.read_summary()
    if not summary:
        raise RunNotFinishedError(f"{folder.summary_path} not found: the run has not finished "
                                  f"(`fgvc resume {folder.path}` finishes it and writes the report)")
    try:
        index = load_recipe_dataset(recipe)
    except (DatasetError, OSError, ValueError) as err:
        log.warning("dataset not readable (%s): the report leaves out the sections that score "
                    "predictions against labels", str(err).splitlines()[0])
        index = None
    with folder.lock():
        return write_report(folder.path, recipe, summary, index)
