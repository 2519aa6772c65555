"""``fgvc table3``: the paper's transfer-learning table (Table 3) as a resumable script.

Per row (one shipped recipe, ``table3/<dataset>``; ``fgvc recipes show table3/cub200`` prints
one): train the whole network at K_train; choose K_test by adapting at every candidate
resolution and keeping the best on validation data (or take the recipe's adapt resolution when
it has no sweep); adapt at K_test; report single-centre-crop
top-1 on the evaluation split at K_train (the baseline), at K_test without adaptation, and
after adaptation, beside the paper's figures.

Every step is an ordinary fgvc run under ``<out>/rows/<dataset>/``, so a killed table resumes
where it stopped (epoch checkpoints), and a finished row (``result.json``) is never recomputed.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fgvc.datasets.base import DatasetError
from fgvc.errors import RecipeError, UsageError
from fgvc.io.atomic import atomic_write
from fgvc.recipes.recipe import Recipe, load_recipe
from fgvc.report import STAND_IN_BANNER, STAND_IN_MARKER
from fgvc.workflows.sweep import HowSure, run_protocol

if TYPE_CHECKING:
    from fgvc.workflows.launch import JobResources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperRow:
    title: str
    model: str
    baseline: float
    fixres: float
    sota_model: str
    sota: float


# Table 3 of the paper, top-1 % (single centre crop).
PAPER: dict[str, PaperRow] = {
    "inaturalist2017": PaperRow("iNaturalist 2017", "SENet-154", 74.1, 75.4, "IncResNet-V2-SE", 67.3),
    "stanford_cars": PaperRow("Stanford Cars", "SENet-154", 94.0, 94.4, "EfficientNet-B7", 94.7),
    "cub200": PaperRow("CUB-200-2011", "SENet-154", 88.4, 88.7, "MPN-COV", 88.7),
    "flowers102": PaperRow("Oxford 102 Flowers", "Inception-ResNet-V2", 95.0, 95.7,
                           "EfficientNet-B7", 98.8),
    "oxford_pets": PaperRow("Oxford-IIIT Pets", "SENet-154", 94.6, 94.8, "AmoebaNet-B", 95.9),
    "nabirds": PaperRow("NABirds", "SENet-154", 88.3, 89.2, "PC-DenseNet-161", 82.8),
    "birdsnap": PaperRow("Birdsnap", "SENet-154", 83.4, 84.3, "EfficientNet-B7", 84.3),
}

SMOKE_OVERRIDES = [
    "model.arch=test_resnet", "model.pretrained=none", "dataset.num_workers=0",
    "stages.train.resolution=32", "stages.train.epochs=2", "stages.train.batch_size=8",
    "stages.train.optimizer.lr=0.05", "stages.adapt.resolution=48", "stages.adapt.epochs=1",
    "stages.adapt.batch_size=8", "sweep_resolutions=[40, 48, 56]", "evaluate.batch_size=16",
]


@dataclass
class RowResult(HowSure):
    dataset: str
    status: str = "done"
    model: str = ""
    train_resolution: int | None = None
    test_resolution: int | None = None
    baseline: float | None = None
    test_resolution_no_adaptation: float | None = None
    adapted: float | None = None
    sweep: dict[str, float] = field(default_factory=dict)
    protocol: str = ""

    @property
    def gain(self) -> float | None:
        if self.adapted is None or self.baseline is None:
            return None
        return self.adapted - self.baseline


def describe_protocol(recipe: Recipe, final: bool = False) -> str:
    """The assumptions a row's figures rest on, for the table's header."""
    train, adapt = recipe.stage("train"), recipe.stage("adapt")
    ds = recipe.dataset
    chooser = (f"K_test chosen among {recipe.sweep_resolutions} px on split {ds.val_split!r}"
               if recipe.sweep_resolutions else f"K_test fixed at {adapt.resolution} px")
    held = (f"{ds.holdout:.0%} of {ds.train_split!r} held out (seeded, stratified)"
            if ds.holdout else f"validation split {ds.val_split!r}")
    return (f"{recipe.model.arch}, train {train.resolution} px for {train.epochs} epoch(s); "
            f"adapt ({adapt.method}, {', '.join(map(str, adapt.trainable))}) for {adapt.epochs} epoch(s); "
            f"{chooser}; {held}; evaluated on {recipe.evaluate.split!r}"
            + ("; final network retrained on the whole training split" if final else ""))


def run_row(dataset: str, recipe: Recipe, row_dir: Path, final: bool = False) -> RowResult:
    """One row: the FixRes protocol of ``fgvc.workflows.sweep``, or a skip when the data is absent."""
    from fgvc.recipes.splits import load_recipe_dataset

    protocol = describe_protocol(recipe, final)
    if not (row_dir / ("result-final.json" if final else "result.json")).exists():
        try:
            load_recipe_dataset(recipe)
        except DatasetError as err:
            return RowResult(dataset, status=f"skipped: {err}", protocol=protocol)
    result = run_protocol(recipe, row_dir, final=final)
    return RowResult(dataset, **asdict(result), protocol=protocol)


def row_recipe(dataset: str, root: Path | None, overrides: list[str],
               recipes_dir: Path | None = None) -> Recipe:
    """The row's recipe: ``recipes_dir/<dataset>.yaml``, by default the shipped ``table3/<dataset>``
    (so ``fgvc table3`` runs from any directory, not only in the repository)."""
    from fgvc.recipes.library import shipped_recipe

    path = (recipes_dir / f"{dataset}.yaml" if recipes_dir is not None
            else shipped_recipe(f"table3/{dataset}").path)
    sets = list(overrides) + ([f"dataset.root={root}"] if root else [])
    recipe = load_recipe(path, sets)
    if not isinstance(recipe, Recipe) or recipe.stage("train") is None or recipe.stage("adapt") is None:
        raise RecipeError(f"{path}: a Table 3 row needs a run recipe with train and adapt stages")
    return recipe


def smoke_data(dataset: str, out: Path) -> Path:
    """Small generated data in the dataset's real layout, written once."""
    from fgvc.datasets.layouts import WRITERS

    root = out / "smoke-data" / dataset
    if not (root / ".complete").exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        WRITERS[dataset](root, num_classes=4, per_class=6)
        (root / STAND_IN_MARKER).write_text("generated by fgvc table3 --smoke\n")
        (root / ".complete").write_text("")
    return root


def table_row(dataset: str, out: Path, root: Path | None, smoke: bool, overrides: list[str],
              recipes_dir: Path | None, final: bool) -> RowResult:
    """One row from its data to its figures (here, or as one job of a fan-out)."""
    sets = (SMOKE_OVERRIDES if smoke else []) + list(overrides)
    root = smoke_data(dataset, out) if smoke else root
    recipe = row_recipe(dataset, root, sets, recipes_dir)
    log.info("table3 %s: %s on %s", dataset, recipe.model.arch, recipe.dataset.root)
    return run_row(dataset, recipe, out / "rows" / dataset, final)


def run_table(datasets: list[str], out: Path, roots: dict[str, Path] | None = None,
              smoke: bool = False, overrides: list[str] | None = None,
              recipes_dir: Path | None = None, final: bool = False,
              resources: JobResources | None = None) -> list[RowResult]:
    """Every row, one after the other here, or with ``resources`` one job per row (a job
    array, fgvc/workflows/fanout.py); a row whose job failed has status ``failed: ...``."""
    unknown = [d for d in datasets if d not in PAPER]
    if unknown:
        raise UsageError(f"--datasets: unknown row(s) {', '.join(unknown)} "
                         f"(rows: {', '.join(PAPER)})")
    roots = dict(roots or {})
    args = {d: (d, out, roots.get(d), smoke, list(overrides or []), recipes_dir, final)
            for d in datasets}
    if resources is not None:
        from fgvc.workflows.fanout import Task, run_tasks

        gathered = run_tasks([Task(d, table_row, args[d]) for d in datasets], resources,
                             "table3", out)
        results = [gathered.results.get(d) or RowResult(
            d, status=f"failed: {gathered.failed[d]}; resubmit it alone with --datasets {d}")
            for d in datasets]
        write_outputs(results, out, smoke)
        return results
    results = []
    for dataset in datasets:
        results.append(table_row(*args[dataset]))
        write_outputs(results, out, smoke)
    return results


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _fmt_ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def _p(p: float | None, fmt) -> str:
    return "" if p is None else fmt(p)


# Machine-readable gains on the same images (top-1 percentage points) and their 95 % Newcombe
# intervals, as extra CSV columns: (column, RowResult field).
GAIN_COLUMNS = [("gain 95% CI", "adapted_vs_baseline_gain_ci"),
                ("gain vs no adaptation", "adapted_vs_no_adaptation_gain"),
                ("gain vs no adaptation 95% CI", "adapted_vs_no_adaptation_gain_ci"),
                ("gain chosen vs runner-up", "chosen_vs_runner_up_gain"),
                ("gain chosen vs runner-up 95% CI", "chosen_vs_runner_up_gain_ci")]


def _plain(value) -> str:
    if value is None:
        return ""
    return f"[{value[0]}, {value[1]}]" if isinstance(value, list) else f"{value}"


def gain_lines(r: RowResult) -> str:
    """One row's gains on the same images, as people read them."""
    from fgvc.analysis.statistics import format_gain

    gains = [("FixRes vs baseline", r.gain, r.adapted_vs_baseline_gain_ci,
              r.adapted_vs_baseline_p),
             (f"FixRes vs no adaptation at {r.test_resolution} px",
              r.adapted_vs_no_adaptation_gain, r.adapted_vs_no_adaptation_gain_ci,
              r.adapted_vs_no_adaptation_p)]
    if r.runner_up is not None:
        gains.append((f"chosen {r.test_resolution} px vs runner-up {r.runner_up} px "
                      "(validation)", r.chosen_vs_runner_up_gain, r.chosen_vs_runner_up_gain_ci,
                      r.chosen_vs_runner_up_p))
    return (f"- {PAPER[r.dataset].title}: "
            + "; ".join(f"{label} {format_gain(*figures)}" for label, *figures in gains))


def write_outputs(results: list[RowResult], out: Path, smoke: bool = False) -> None:
    """table3.md, table3.csv and table3.png, rewritten after every row (by the main process)."""
    from fgvc.engine.distributed import current

    if not current().is_main:
        return
    out.mkdir(parents=True, exist_ok=True)
    from fgvc.analysis.statistics import format_gain, format_p

    columns = ["dataset", "model", "train px", "test px", "baseline (ours)",
               "test px, no adaptation (ours)", "FixRes (ours)", "gain (ours)", "paper baseline",
               "paper FixRes", "paper gain", "best published then", "status",
               "baseline 95% CI", "FixRes 95% CI", "McNemar p FixRes vs baseline",
               "McNemar p FixRes vs no adaptation", "runner-up px", "McNemar p chosen vs runner-up"]
    rows, shown = [], []
    for r in results:
        paper = PAPER[r.dataset]
        row = [paper.title, r.model or paper.model, r.train_resolution or "",
               r.test_resolution or "", _fmt(r.baseline),
               _fmt(r.test_resolution_no_adaptation), _fmt(r.adapted), _fmt(r.gain),
               f"{paper.baseline:.1f}", f"{paper.fixres:.1f}",
               f"{paper.fixres - paper.baseline:.1f}", f"{paper.sota:.1f} ({paper.sota_model})",
               r.status, _fmt_ci(r.baseline_ci), _fmt_ci(r.adapted_ci),
               _p(r.adapted_vs_baseline_p, format_p), _p(r.adapted_vs_no_adaptation_p, format_p),
               r.runner_up or "", _p(r.chosen_vs_runner_up_p, format_p)]
        rows.append(row + [_plain(getattr(r, name)) for _, name in GAIN_COLUMNS])
        gain = columns.index("gain (ours)")
        shown.append(row[:gain] + [format_gain(r.gain, r.adapted_vs_baseline_gain_ci)
                                   if r.gain is not None else ""] + row[gain + 1:])
    with (out / "table3.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + [c for c, _ in GAIN_COLUMNS])
        writer.writerows(rows)
    lines = ["# Table 3: transfer learning, single centre crop top-1 (%)", "",
             *([STAND_IN_BANNER.replace("small generated data", "`--smoke`: small generated data, "
                                        "a tiny network and tiny resolutions"), ""] if smoke else []),
             "Intervals: 95 % Wilson score on the evaluated images; gains: top-1 difference on "
             "the same images in percentage points, 95 % Newcombe interval (method 10, paired); "
             "p: McNemar's exact test on the same images. Protocol assumptions per row:", ""]
    lines += [f"- {PAPER[r.dataset].title}: {r.protocol or 'not run'}" for r in results]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in shown]
    done = [r for r in results if r.gain is not None]
    if done:
        lines += ["", "Gains on the same images:", "", *map(gain_lines, done)]
    atomic_write(out / "table3.md", "\n".join(lines) + "\n")
    _plot(results, out / "table3.png")


def _plot(results: list[RowResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [PAPER[r.dataset].title for r in results]
    series = [("baseline (ours)", [r.baseline for r in results]),
              ("FixRes (ours)", [r.adapted for r in results]),
              ("paper baseline", [PAPER[r.dataset].baseline for r in results]),
              ("paper FixRes", [PAPER[r.dataset].fixres for r in results])]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(results)), 4), dpi=110)
    width = 0.2
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - 1.5) * width, [v if v is not None else 0 for v in values], width,
               label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

