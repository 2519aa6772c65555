"""A run's ``report.md``, built from sections, every figure a PNG beside it.

The report is a list of section builders, each a function of one :class:`ReportContext` that
returns Markdown lines (or nothing, when it has nothing to say for this run). Other modules add
their own sections with :func:`section` and an ``order`` number that places them:

    10 title and banner, 20 stages and time, 30 training curves, 40 accuracy vs resolution,
    50 per-class accuracy and confusions, 60 test split, 90 outputs.

    @section(45)
    def my_section(ctx: ReportContext) -> list[str] | None:
        found = ctx.scored(RunFolder.EVAL_PREDICTIONS, ctx.recipe.evaluate.split)
        ...

``ctx.scored`` gives a predictions file of the run folder with its metrics against the split's
labels; ``ctx.figure(name)`` the path for a PNG beside report.md (sent to the trackers too). The
module registering a section must be imported before the report is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fgvc.analysis import science_report
from fgvc.engine.best import describe_selection
from fgvc.io.atomic import atomic_save, atomic_write
from fgvc.recipes.recipe import Recipe
from fgvc.runfolder import RunFolder

log = logging.getLogger(__name__)

CROP_TITLES = {"center": "single centre crop", "center_flip": "centre crop + flip",
               "ten_crop": "10 crops"}
PHASE_TITLES = {"before_adaptation": "before adaptation", "after_adaptation": "after adaptation"}


def crops_title(crops: str | None, average: str | None = None) -> str:
    """``10 crops, logits averaged``: the crops, and how they were combined when there are
    several (older predictions record no ``average``)."""
    title = CROP_TITLES.get(crops, str(crops))
    return title if crops == "center" or not average else f"{title}, {average} averaged"
STAND_IN_MARKER = ".fgvc-stand-in"  # written beside generated stand-in data (table3 --smoke)
STAND_IN_BANNER = ("> **Stand-in data.** These numbers come from small generated data: they check "
                   "that the machinery works end to end and are not comparable to the paper's "
                   "figures.")


@dataclass
class ReportContext:
    """Everything a section may read. ``index`` (the dataset) is optional: without it the
    sections that need labels say so instead of failing."""

    run_dir: Path
    recipe: Recipe
    summary: dict
    index: Any = None
    figures: list[str] = field(default_factory=list)
    _scored: dict = field(default_factory=dict, repr=False)

    @cached_property
    def evaluation(self) -> dict[str, dict[str, dict]]:
        return RunFolder(self.run_dir).read_evaluation()

    @cached_property
    def epochs(self):
        """metrics.jsonl as a table (pandas), one row per epoch; None when there is none."""
        path = RunFolder(self.run_dir).metrics_path
        if not path.exists() or not path.read_text().strip():
            return None
        import pandas as pd

        return pd.read_json(path, lines=True)

    @property
    def num_classes(self) -> int:
        return int(self.summary.get("num_classes", 0))

    @property
    def show_top5(self) -> bool:
        return self.num_classes > 5

    def scored(self, predictions: str, split: str):
        """``(Predictions, ClassificationMetrics)`` of a predictions file of the run folder
        against the split's labels (or answer file); None without labels, dataset or file.
        Cached: several sections may read the same predictions."""
        key = (predictions, split)
        if key not in self._scored:
            self._scored[key] = self._score(predictions, split)
        return self._scored[key]

    def _score(self, predictions: str, split: str):
        from fgvc.analysis.metrics import answer_key, compute_metrics, labels_for
        from fgvc.inference.predictions import Predictions

        path = RunFolder(self.run_dir).file(predictions)
        if self.index is None or not path.exists():
            return None
        answers = answer_key(self.index, split)
        if answers is None:
            return None
        preds = Predictions.load(path)
        names = dict(zip(self.index.category_ids, self.index.classes, strict=True))
        labels = labels_for(preds.ids, answers, preds.class_ids)
        return preds, compute_metrics(labels, preds.probs,
                                      [names.get(c, c) for c in preds.class_ids], preds.class_ids)

    def figure(self, name: str) -> Path:
        """Where a section saves its PNG (beside report.md); recorded for the trackers."""
        self.figures.append(name)
        return RunFolder(self.run_dir).file(name)


Section = Callable[[ReportContext], list[str] | None]
SECTIONS: list[tuple[int, str, Section]] = []


def section(order: int) -> Callable[[Section], Section]:
    """Register a report section; a builder registered again under its name replaces the old."""

    def register(builder: Section) -> Section:
        SECTIONS[:] = [s for s in SECTIONS if s[1] != builder.__qualname__]
        SECTIONS.append((order, builder.__qualname__, builder))
        SECTIONS.sort(key=lambda s: s[0])
        return builder

    return register


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def seconds_text(seconds: float) -> str:
    from fgvc.progress import format_duration

    return f"{seconds:.1f} s" if seconds < 60 else f"{format_duration(seconds)} ({seconds:.0f} s)"


def is_stand_in(recipe: Recipe) -> bool:
    """Generated data: the embedded dataset, or data written by ``table3 --smoke``."""
    root = Path(recipe.dataset.root or "")
    return recipe.dataset.name == "synthetic" or (root / STAND_IN_MARKER).exists()


# --- 10: title -------------------------------------------------------------------------------
@section(10)
def title(ctx: ReportContext) -> list[str]:
    recipe, summary = ctx.recipe, ctx.summary
    processes = summary.get("processes", 1)
    sizes = ", ".join(f"{k} {v:,}" for k, v in summary.get("split_sizes", {}).items())
    lines = [f"# {ctx.run_dir.name}: {recipe.model.arch} on {recipe.dataset.name}, "
             f"device {summary.get('device', '?')}", ""]
    if is_stand_in(recipe):
        lines += [STAND_IN_BANNER, ""]
    lines += [f"Run `{ctx.run_dir.name}` (recipe `{recipe.name}`, seed {recipe.seed}): dataset "
              f"`{recipe.dataset.name}` at `{recipe.dataset.root}` ({ctx.num_classes} classes; "
              f"{sizes}), model `{recipe.model.arch}` ({summary.get('parameters', 0):,} "
              f"parameters), device {summary.get('device', '?')}"
              f"{f' x {processes} processes' if processes > 1 else ''}.",
              ""]
    return lines


# --- 15: precision ---------------------------------------------------------------------------
@section(15)
def precision(ctx: ReportContext) -> list[str] | None:
    """What the recipe's ``precision`` became on this device (summary.json, engine/device.py),
    with the warning an emulated bf16 earns: a slow run says why in its report."""
    used = ctx.summary.get("precision")
    if not used:
        return None
    native = used.get("native_bf16")
    why = ""
    if used["requested"] == "auto" or used["used"] == "bf16":
        why = (" (bf16 runs natively here)" if native else
               " (bf16 is emulated here: no AMX or AVX512-BF16 unit)" if used["used"] == "bf16"
               else " (bf16 would be emulated here: no AMX or AVX512-BF16 unit)")
    lines = [f"Precision: `{used['requested']}` -> **{used['used']}** on "
             f"{ctx.summary.get('device', '?')}{why}.", ""]
    if used.get("warning"):
        lines += [f"> **Warning.** {used['warning']}.", ""]
    return lines


# --- 20: stages and time ---------------------------------------------------------------------
def _stage_seconds(ctx: ReportContext) -> dict[str, float]:
    table = ctx.epochs
    if table is None or "stage" not in table:
        return {}
    column = "epoch_seconds" if "epoch_seconds" in table else "seconds"
    return {str(k): float(v) for k, v in table.groupby("stage", sort=False)[column].sum().items()}


@section(20)
def stages(ctx: ReportContext) -> list[str]:
    spent = _stage_seconds(ctx)
    lines = ["## Stages and time", ""]
    for s in ctx.recipe.stages:
        took = f", {seconds_text(spent[s.name])} (training and validation)" if s.name in spent else ""
        lines.append(f"- `{s.name}`: {s.epochs} epoch(s) at {s.resolution} px, augment "
                     f"`{s.augment}`, trainable {ctx.summary.get('trainable', {}).get(s.name, s.trainable)}"
                     f"{describe_selection(ctx.summary.get('weights_used', {}).get(s.name))}{took}")
    for phase, results in ctx.evaluation.items():
        timed = [(r, m["seconds"]) for r, m in results.items() if "seconds" in m]
        if timed:
            each = ", ".join(f"{r} px " + ("(reused the identical earlier pass)"
                                           if results[r].get("reused") else seconds_text(t))
                             for r, t in timed)
            lines.append(f"- evaluation {PHASE_TITLES.get(phase, phase)}: {each}")
    if "predict_seconds" in ctx.summary:
        lines.append(f"- prediction: {seconds_text(ctx.summary['predict_seconds'])}")
    if "seconds" in ctx.summary:
        lines.append(whole_run_line(ctx.summary["seconds"]))
    return lines + [""]


WHOLE_RUN = "- whole run (this invocation): "


def whole_run_line(seconds: float) -> str:
    return WHOLE_RUN + seconds_text(seconds)


# --- 30: training curves ---------------------------------------------------------------------
def plot_curves(table, path: Path) -> None:
    """Loss (train, val) and val top-1 per epoch, stages one after the other."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    offset = 0
    for stage, rows in table.groupby("stage", sort=False):
        x = rows["epoch"].to_numpy() + offset
        ax_loss.plot(x, rows["train_loss"], marker="o", label=f"{stage}: train")
        ax_loss.plot(x, rows["val_loss"], marker="s", linestyle="--", label=f"{stage}: val")
        ax_acc.plot(x, rows["val_top1"], marker="o", label=f"{stage}: val")
        if offset:
            for ax in (ax_loss, ax_acc):
                ax.axvline(offset + 0.5, color="grey", linestyle=":")
        offset = int(x.max())
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("val top-1 accuracy (%)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (stages in order)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png"), fsync=False)
    plt.close(fig)


@section(30)
def training_curves(ctx: ReportContext) -> list[str] | None:
    table = ctx.epochs
    if table is None or not {"stage", "epoch", "train_loss", "val_loss", "val_top1"} <= set(table):
        return None
    plot_curves(table, ctx.figure("training_curves.png"))
    def shown(value: float, spec: str) -> str:  # an epoch without validation: a dash, not nan
        return "-" if value != value else format(value, spec)

    rows = [[r.stage, int(r.epoch), shown(r.train_loss, ".3f"), shown(r.val_loss, ".3f"),
             shown(r.val_top1, ".1f")] for r in table.itertuples()]
    return ["## Training curves", "", "![training curves](training_curves.png)", "",
            *md_table(["stage", "epoch", "train loss", "val loss", "val top-1 %"], rows), ""]


# --- 40: accuracy vs resolution --------------------------------------------------------------
def plot_accuracy(evaluation: dict[str, dict[str, dict]], train_resolution: int | None,
                  adapt_resolution: int | None, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for phase, results in evaluation.items():
        resolutions = sorted(int(r) for r in results)
        ax.plot(resolutions, [results[str(r)]["top1"] for r in resolutions], marker="o",
                label=PHASE_TITLES.get(phase, phase))
    if train_resolution:
        ax.axvline(train_resolution, color="grey", linestyle=":", label="train resolution")
    if adapt_resolution:
        ax.axvline(adapt_resolution, color="grey", linestyle="--", label="adapt resolution")
    ax.set_xlabel("test resolution (px)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png"), fsync=False)
    plt.close(fig)


def accuracy_table(evaluation: dict[str, dict[str, dict]], train_resolution: int | None,
                   adapt_resolution: int | None = None, show_top5: bool = True) -> str:
    phases = list(evaluation)
    resolutions = sorted({int(r) for results in evaluation.values() for r in results})
    head = ["test resolution"]
    for phase in phases:
        title = PHASE_TITLES.get(phase, phase)
        head += [f"top-1 {title}"] + ([f"top-5 {title}"] if show_top5 else [])
    rows = []
    for res in resolutions:
        marks = [m for m, r in (("train", train_resolution), ("adapt", adapt_resolution)) if r == res]
        cells = [f"{res} ({', '.join(marks)})" if marks else str(res)]
        for phase in phases:
            m = evaluation[phase].get(str(res))
            if m:
                cells += [f"{m['top1']:.1f}"] + ([f"{m['top5']:.1f}"] if show_top5 else [])
            else:
                cells += [""] * (2 if show_top5 else 1)
        rows.append(cells)
    return "\n".join(md_table(head, rows))


@section(40)
def accuracy_vs_resolution(ctx: ReportContext) -> list[str] | None:
    if not ctx.evaluation:
        return None
    train, adapt = ctx.recipe.stage("train"), ctx.recipe.stage("adapt")
    train_res = train.resolution if train else None
    adapt_res = adapt.resolution if adapt else None
    plot_accuracy(ctx.evaluation, train_res, adapt_res, ctx.figure("accuracy_vs_resolution.png"))
    note = "" if ctx.show_top5 else " (top-5 not shown: with 5 classes or fewer it is 100 %)"
    return [f"## Accuracy vs test resolution ({ctx.recipe.evaluate.split} split, "
            f"{crops_title(ctx.recipe.evaluate.crops, ctx.recipe.evaluate.average)}, %){note}",
            "",
            accuracy_table(ctx.evaluation, train_res, adapt_res, ctx.show_top5), "",
            "![accuracy vs test resolution](accuracy_vs_resolution.png)", ""]


# --- 50 and 60: per-class view, test split ---------------------------------------------------
def summary_rows(metrics) -> list[list[str]]:
    rows = [["top-1", f"{metrics.top1:.1f}"]]
    if metrics.top5 is not None:
        rows.append(["top-5", f"{metrics.top5:.1f}"])
    rows += [["macro-averaged accuracy (mean of per-class accuracies)", f"{metrics.macro_accuracy:.1f}"],
             ["macro-F1 (the Herbarium 2020-2022 Kaggle metric)", f"{metrics.macro_f1:.1f}"]]
    return rows


def plot_confusion(metrics, path: Path) -> None:
    """The whole matrix (row-normalised) for a few classes; else the most confused pairs."""
    import numpy as np

    plt = _pyplot()
    if metrics.confusion is not None:
        names = [row["name"] for row in sorted(metrics.per_class, key=lambda r: r["label"])]
        matrix = metrics.confusion.astype(float)
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        n = matrix.shape[0]
        size = min(4 + 0.25 * n, 16)
        fig, ax = plt.subplots(figsize=(size, size), dpi=110)
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
        if len(names) == n:
            ax.set_xticks(range(n), names, rotation=90, fontsize=7)
            ax.set_yticks(range(n), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    else:
        pairs = metrics.confused_pairs
        fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(pairs), 1) + 1.5), dpi=110)
        ax.barh([f"{p['true']} -> {p['predicted']}" for p in pairs][::-1],
                [p["count"] for p in pairs][::-1])
        ax.set_xlabel("images")
        ax.set_title("most frequent confusions (true -> predicted)")
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png"), fsync=False)
    plt.close(fig)


@section(50)
def per_class(ctx: ReportContext) -> list[str] | None:
    split = ctx.recipe.evaluate.split
    found = ctx.scored(RunFolder.EVAL_PREDICTIONS, split)
    if found is None:
        return None
    preds, metrics = found
    import pandas as pd

    table = pd.DataFrame(metrics.per_class).sort_values(["accuracy", "name"], kind="stable")
    table.to_csv(RunFolder(ctx.run_dir).per_class_path, index=False, float_format="%.2f")
    plot_confusion(metrics, ctx.figure("confusion.png"))
    res = preds.meta.get("resolutions", ["?"])
    worst = [[r.name, r.category_id, r.images, f"{r.accuracy:.1f}"] for r in table.head(10).itertuples()]
    lines = [f"## Per class ({split} split at {', '.join(map(str, res))} px, "
             f"{crops_title(preds.meta.get('crops'), preds.meta.get('average'))}, %)", "",
             *md_table(["metric", "%"], summary_rows(metrics)), "",
             f"Worst {min(10, len(table))} of {len(table)} classes (all in `per_class_accuracy.csv`):",
             "", *md_table(["class", "category id", "images", "accuracy %"], worst), ""]
    if metrics.confusion is not None:
        lines.append("![confusion matrix](confusion.png)")
    else:
        lines += [f"Most frequent confusions ({len(metrics.confused_pairs)} shown):", "",
                  "![most confused pairs](confusion.png)"]
    return lines + [""]


@section(60)
def test_split(ctx: ReportContext) -> list[str] | None:
    if ctx.recipe.predict is None:
        return None
    split = ctx.recipe.predict.split
    found = ctx.scored(RunFolder.PREDICTIONS, split)
    if found is None:
        return None
    preds, metrics = found
    source = ("its labels" if ctx.index.is_labelled(split)
              else f"the answer file {Path(ctx.index.root) / 'solution' / f'{split}_labels.csv'}")
    return [f"## {split.capitalize()} split ({metrics.images} images, scored against {source}; "
            f"{crops_title(preds.meta.get('crops'), preds.meta.get('average'))} at "
            f"{', '.join(map(str, preds.meta.get('resolutions', [])))} px, %)", "",
            *md_table(["metric", "%"], summary_rows(metrics)), ""]


@section(45)
def error_bars_and_activations(ctx: ReportContext) -> list[str] | None:
    """Confidence intervals, McNemar tests and activation statistics (fgvc/analysis/)."""
    return science_report.markdown_lines(ctx.run_dir, ctx.recipe) or None


# --- 46: adapted distribution (appendix A.2, Table 4) ----------------------------------------
@section(46)
def adapted_distribution(ctx: ReportContext) -> list[str] | None:
    """The paper's Table 4 comparison for a ``gaussian`` run: the network before adaptation and
    with the adapted distribution at each test resolution the run evaluated, what was fitted,
    and the paper's rows beside them."""
    import json

    adapt = ctx.recipe.stage("adapt")
    if adapt is None or adapt.method != "gaussian" or not ctx.evaluation:
        return None
    record = RunFolder(ctx.run_dir).adaptation_record(adapt.name, adapt.method)
    fit = json.loads(record.read_text()) if record.exists() else {}
    evaluate = ctx.recipe.evaluate
    return ["## Adapted distribution (appendix A.2, the paper's Table 4)", "",
            f"{evaluate.split} split, {crops_title(evaluate.crops, evaluate.average)}; the rows "
            "this run computed:", "", *md_table(*_distribution_rows(ctx.evaluation,
                                                                    adapt.resolution)), "",
            _gaussian_fit_line(fit, adapt.resolution), "",
            "The paper's Table 4 (ResNet-50 trained at 224 px, ImageNet validation, top-1 %):",
            "", *md_table(*_table4()), ""]


def _distribution_rows(evaluation: dict, adapted_to: int) -> tuple[list[str], list[list[str]]]:
    resolutions = sorted({int(r) for phase in evaluation.values() for r in phase})
    head = ["top-1 %"] + [f"{r} (adapted to)" if r == adapted_to else str(r) for r in resolutions]
    rows = [[title] + [f"{evaluation[phase][str(r)]['top1']:.1f}"
                       if str(r) in evaluation.get(phase, {}) else "" for r in resolutions]
            for phase, title in (("before_adaptation", "no adaptation"),
                                 ("after_adaptation", "adapted distribution (`gaussian`)"))]
    return head, rows


def _gaussian_fit_line(fit: dict, adapted_to: int) -> str:
    def side(values: dict) -> str:
        mean, std = values.get("mean") or [float("nan")], values.get("std") or [float("nan")]
        return (f"{values.get('resolution')} px: channel means {sum(mean) / len(mean):.3f} and "
                f"stds {sum(std) / len(std):.3f} on average, "
                f"{100 * values.get('positive', float('nan')):.1f} % of values > 0")

    return (f"Per-channel Gaussians of the input of `{fit.get('module', '?')}` (the activation "
            f"whose output the pooling reads, {fit.get('channels', '?')} channels) on split "
            f"`{fit.get('split', '?')}`: {side(fit.get('reference', {}))}; "
            f"{side(fit.get('test', {}))}. Each channel's map "
            "`mean_ref + std_ref / std_test * (x - mean_test)` sends the second onto the first "
            "and is applied before that activation at every test resolution (fitted for "
            f"{adapted_to} px only; the paper fits one per test resolution).")


def _table4() -> tuple[list[str], list[list]]:
    from fgvc.analysis.gaussian import TABLE4, TABLE4_RESOLUTIONS

    names = ("adapted distribution", "fine-tuned classifier", "fine-tuned BN")
    rows = [[" + ".join(n for n, on in zip(names, flags, strict=True) if on) or "no adaptation",
             *values] for flags, values in TABLE4]
    return ["adaptation", *map(str, TABLE4_RESOLUTIONS)], rows


# --- 90: outputs -----------------------------------------------------------------------------
@section(90)
def outputs(ctx: ReportContext) -> list[str]:
    tensorboard = RunFolder(ctx.run_dir).tensorboard_dir
    return ["## Outputs",
            f"- predictions: `{ctx.summary.get('predictions', '-')}`",
            f"- submission: `{ctx.summary.get('submission', '-')}`",
            "- per-epoch metrics: `metrics.jsonl`; checkpoints: `checkpoints/`; "
            "resolved recipe: `recipe.yaml`",
            *([f"- TensorBoard: `tensorboard --logdir {tensorboard}`"] if tensorboard.exists() else []),
            ""]


def write_report(run_dir: Path, recipe: Recipe, summary: dict, index: Any = None,
                 tracker: Any = None, clock: Callable[[], float] | None = None) -> Path:
    """Build every registered section into ``report.md``; figures go to the trackers too.

    ``clock``: the invocation's seconds so far, read once every section is built (metrics and
    figures, seconds of a run's end) and stored in ``summary["seconds"]``, so that the
    report's whole-run time includes writing the report."""
    ctx = ReportContext(run_dir, recipe, summary, index)
    text: list[str] = []
    for _order, _name, builder in SECTIONS:
        lines = builder(ctx)
        if lines:
            text += lines
    if clock is not None:
        summary["seconds"] = clock()
        text = [whole_run_line(summary["seconds"]) if line.startswith(WHOLE_RUN) else line
                for line in text]
    path = RunFolder(run_dir).report_path
    atomic_write(path, "\n".join(text))
    if tracker:
        for name in ctx.figures:
            tracker.image(Path(name).stem, RunFolder(run_dir).file(name))
    return path
