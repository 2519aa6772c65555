"""The run folder's layout in one place: every file a run writes, and reading the ones it
wrote back.

``runs/<name>/`` holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one row per
epoch), ``evaluation.json`` (accuracy per phase and resolution), ``summary.json``,
``report.md`` with its PNG figures and ``per_class_accuracy.csv``, ``log.txt``,
``recipe_changes.jsonl``, ``checkpoints/``, ``predictions/``, ``eval_predictions/``,
``activations.json``, ``<stage>_<method>.json`` of a label-free adaptation, ``tensorboard/``
and ``.lock``. Every other module asks a :class:`RunFolder` for these paths instead of
spelling them, so a change of layout is a change here.

Only light imports at module level: the recipe parser, the atomic writer and the lock; the checkpoint
reader (torch) is imported where a checkpoint is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgvc.errors import FgvcError
from fgvc.io.atomic import RunFileError, atomic_write, read_json
from fgvc.io.lock import FolderLock

if TYPE_CHECKING:
    from fgvc.recipes.recipe import Recipe


class NotARunFolderError(FgvcError, FileNotFoundError):
    """A path given as a run folder holds no ``recipe.yaml``."""


class RunNotFinishedError(FgvcError, FileNotFoundError):
    """A run folder whose last stage has no final checkpoint yet."""


class RunFolder:
    """``RunFolder(path)`` names the files of a run; :meth:`open` also checks it is one."""

    RECIPE = "recipe.yaml"
    METRICS = "metrics.jsonl"
    EVALUATION = "evaluation.json"
    SUMMARY = "summary.json"
    REPORT = "report.md"
    LOG = "log.txt"
    CHANGES = "recipe_changes.jsonl"
    CHECKPOINTS = "checkpoints"
    PREDICTIONS = "predictions"
    EVAL_PREDICTIONS = "eval_predictions"
    LEGACY_PREDICTIONS = "predictions.npz"  # written by earlier versions, still read
    IMAGE_PREDICTIONS = "predictions-images.csv"  # `fgvc predict RUN --images` by default
    PER_CLASS = "per_class_accuracy.csv"
    ACTIVATIONS = "activations.json"
    ACTIVATIONS_FIGURE = "activations_cdf.png"
    TENSORBOARD = "tensorboard"
    KEPT_ACTIVATIONS = "kept_activations"  # scratch: a frozen prefix's outputs kept on disk
    ADAPT_CACHE = "adapt_cache"  # scratch: features cached for an adapt stage

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """The run folder at ``path``; refused in one line when it is not one."""
        folder = cls(path)
        if not folder.path.is_dir():
            raise NotARunFolderError(f"{folder.path}: no such run folder (a folder under runs/, "
                                     "e.g. runs/quickstart)")
        if not folder.recipe_path.is_file():
            raise NotARunFolderError(f"{folder.path} is not a fgvc run folder (no {cls.RECIPE})")
        return folder

    # -- paths ---------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """A file beside the report (a figure, a per-run artefact)."""
        return self.path / name

    @property
    def recipe_path(self) -> Path:
        return self.path / self.RECIPE

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def evaluation_path(self) -> Path:
        return self.path / self.EVALUATION

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @property
    def changes_path(self) -> Path:
        return self.path / self.CHANGES

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def predictions_dir(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def eval_predictions_dir(self) -> Path:
        return self.path / self.EVAL_PREDICTIONS

    @property
    def legacy_predictions_path(self) -> Path:
        return self.path / self.LEGACY_PREDICTIONS

    @property
    def image_predictions_path(self) -> Path:
        return self.path / self.IMAGE_PREDICTIONS

    @property
    def per_class_path(self) -> Path:
        return self.path / self.PER_CLASS

    @property
    def activations_path(self) -> Path:
        return self.path / self.ACTIVATIONS

    @property
    def activations_figure_path(self) -> Path:
        return self.path / self.ACTIVATIONS_FIGURE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def kept_activations_dir(self) -> Path:
        return self.path / self.KEPT_ACTIVATIONS

    @property
    def adapt_cache_dir(self) -> Path:
        return self.path / self.ADAPT_CACHE

    def predictions_for(self, split: str, crops: str, resolutions: list[int]) -> Path:
        """Where ``fgvc predict RUN`` writes by default: one folder per split, crops and
        resolutions, beside the run's own ``predictions/``."""
        return self.path / f"predictions-{split}-{crops}-{'-'.join(map(str, resolutions))}"

    def export_dir(self, fmt: str, resolution: int) -> Path:
        """Where ``fgvc export RUN`` writes by default: one folder per format and resolution."""
        return self.path / f"export-{fmt}-{resolution}"

    def adaptation_record(self, stage: str, method: str) -> Path:
        """What a label-free adaptation method did (``adapt_bn_stats.json``...)."""
        return self.path / f"{stage}_{method}.json"

    def checkpoint(self, stage: str, kind: str = "final") -> Path:
        """``final`` (the stage's result), ``last`` (its latest checkpoint, for resuming),
        ``best`` (its best validated epoch) or ``last_epoch`` (the weights of its last epoch
        when the best epoch was kept instead)."""
        suffix = {"final": "", "last": "_last", "best": "_best", "last_epoch": "_last_epoch"}[kind]
        return self.checkpoint_dir / f"{stage}{suffix}.pt"

    def lock(self) -> FolderLock:
        """One writer per run folder: ``with folder.lock():`` refuses when another live process
        holds it (see :class:`fgvc.io.lock.FolderLock`)."""
        return FolderLock(self.path)

    # -- the recipe ----------------------------------------------------------------------------
    def read_recipe(self) -> Recipe:
        """The recipe the run was started with; a missing or corrupt file is named."""
        from fgvc.recipes.recipe import Recipe, parse_recipe
        from fgvc.recipes.schema import SchemaError, read_yaml

        path = self.recipe_path
        if not path.is_file():
            raise NotARunFolderError(f"{self.path} is not a fgvc run folder (no {self.RECIPE})")
        try:
            recipe = parse_recipe(read_yaml(path.read_text(encoding="utf-8"), str(path)), str(path))
        except (SchemaError, UnicodeDecodeError) as err:
            raise RunFileError(f"{path} is corrupt or no longer valid: {err}") from None
        if not isinstance(recipe, Recipe):
            raise RunFileError(f"{path} is not a run recipe")
        return recipe

    def read_recipe_data(self) -> dict:
        """The stored recipe as plain data, to apply overrides to before parsing."""
        from fgvc.recipes.schema import read_yaml

        if not self.recipe_path.is_file():
            raise NotARunFolderError(f"{self.path} is not a fgvc run folder (no {self.RECIPE})")
        return read_yaml(self.recipe_path.read_text(encoding="utf-8"), str(self.recipe_path))

    def write_recipe(self, recipe: Recipe) -> None:
        import yaml

        atomic_write(self.recipe_path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))

    # -- JSON files ----------------------------------------------------------------------------
    @staticmethod
    def _read_json(path: Path, default: Any) -> Any:
        return read_json(path) if path.exists() else default

    def read_evaluation(self) -> dict:
        return self._read_json(self.evaluation_path, {})

    def write_evaluation(self, data: dict) -> None:
        atomic_write(self.evaluation_path, json.dumps(data, indent=2) + "\n")

    def read_summary(self) -> dict:
        return self._read_json(self.summary_path, {})

    def write_summary(self, data: dict) -> None:
        atomic_write(self.summary_path, json.dumps(data, indent=2) + "\n")

    def metric_rows(self) -> list[dict]:
        """``metrics.jsonl``, one dict per line; a torn or corrupt line is named."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for number, line in enumerate(self.metrics_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise RunFileError(f"{self.metrics_path}, line {number} is corrupt: "
                                   f"{line[:60]!r}; delete that line and resume") from None
        return rows

    def write_metrics(self, rows: list[dict]) -> None:
        """The whole file, atomically: a kill never leaves a torn line."""
        atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # -- state of the run ----------------------------------------------------------------------
    def final_weights(self, recipe: Recipe | None = None) -> Path:
        """The last stage's final checkpoint; refused in one line when the run has not got
        that far."""
        recipe = recipe or self.read_recipe()
        weights = self.checkpoint(recipe.stages[-1].name)
        if not weights.is_file():
            raise RunNotFinishedError(f"{weights} not found: the run has not finished its last "
                                      f"stage (`fgvc resume {self.path}` finishes it)")
        return weights

    @property
    def finished(self) -> bool:
        """Every step ran: the summary and the report exist (they are written last)."""
        return self.summary_path.is_file() and self.report_path.is_file()
