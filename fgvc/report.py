"""A run's ``report.md``: the accuracy-versus-test-resolution table before and after
adaptation, and the same as a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

from fgvc.analysis import science_report
from fgvc.engine.atomic import atomic_save, atomic_write
from fgvc.recipes.recipe import Recipe

CROP_TITLES = {"center": "single centre crop", "center_flip": "centre crop + flip",
               "ten_crop": "10 crops"}
PHASE_TITLES = {"before_adaptation": "before adaptation", "after_adaptation": "after adaptation"}


def plot_accuracy(evaluation: dict[str, dict[str, dict]], train_resolution: int | None,
                  adapt_resolution: int | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
                   adapt_resolution: int | None = None) -> str:
    phases = list(evaluation)
    resolutions = sorted({int(r) for results in evaluation.values() for r in results})
    head = ["test resolution"]
    for phase in phases:
        title = PHASE_TITLES.get(phase, phase)
        head += [f"top-1 {title}", f"top-5 {title}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in resolutions:
        marks = [m for m, r in (("train", train_resolution), ("adapt", adapt_resolution)) if r == res]
        label = f"{res} ({', '.join(marks)})" if marks else str(res)
        cells = [label]
        for phase in phases:
            m = evaluation[phase].get(str(res))
            cells += [f"{m['top1']:.1f}", f"{m['top5']:.1f}"] if m else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(run_dir: Path, recipe: Recipe, summary: dict) -> Path:
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    train, adapt = recipe.stage("train"), recipe.stage("adapt")
    train_res = train.resolution if train else None
    adapt_res = adapt.resolution if adapt else None
    plot_accuracy(evaluation, train_res, adapt_res, run_dir / "accuracy_vs_resolution.png")
    stage_lines = [
        f"- `{s.name}`: {s.epochs} epoch(s) at {s.resolution} px, augment `{s.augment}`, "
        f"trainable {summary['trainable'].get(s.name, s.trainable)}"
        for s in recipe.stages
    ]
    text = [
        f"# Run `{run_dir.name}`",
        "",
        f"Dataset `{recipe.dataset.name}` ({summary['num_classes']} classes; "
        + ", ".join(f"{k} {v}" for k, v in summary["split_sizes"].items())
        + f"), model `{recipe.model.arch}` ({summary['parameters']:,} parameters), "
        f"device {summary['device']}.",
        "",
        "## Stages",
        *stage_lines,
        "",
        f"## Accuracy vs test resolution ({recipe.evaluate.split} split, "
        f"{CROP_TITLES[recipe.evaluate.crops]}, %)",
        "",
        accuracy_table(evaluation, train_res, adapt_res),
        "",
        "![accuracy vs test resolution](accuracy_vs_resolution.png)",
        "",
        *science_report.markdown_lines(run_dir, recipe),
        "## Outputs",
        f"- predictions: `{summary.get('predictions', '-')}`",
        f"- submission: `{summary.get('submission', '-')}`",
        "- per-epoch metrics: `metrics.jsonl`; checkpoints: `checkpoints/`; "
        "resolved recipe: `recipe.yaml`",
        f"- wall time: {summary['seconds']:.0f} s",
        "",
    ]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(text))
    return path
