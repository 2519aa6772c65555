"""The report.md sections of the resolution science: how sure each top-1 is (95 % Wilson
interval), whether adaptation changed the predictions beyond chance (McNemar's exact test on
the same images), what a label-free adaptation fitted, and the pooled-activation statistics."""

from __future__ import annotations

import json
from pathlib import Path

from fgvc.analysis import activations
from fgvc.analysis.statistics import format_ci, format_p
from fgvc.runfolder import RunFolder

PHASES = ("before_adaptation", "after_adaptation")


def confidence_lines(evaluation: dict) -> list[str]:
    phases = [p for p in PHASES if p in evaluation]
    if not any("top1_ci95" in e for p in phases for e in evaluation[p].values()):
        return []
    resolutions = sorted({int(r) for p in phases for r in evaluation[p]})
    paired = "after_adaptation" in phases and "before_adaptation" in phases
    head = ["test resolution"] + [f"top-1 {p.replace('_', ' ')} [95 % CI]" for p in phases]
    if paired:
        head += ["right only after / only before", "McNemar exact p"]
    lines = ["## How sure: 95 % Wilson intervals and McNemar's exact test", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in resolutions:
        cells = [str(res)]
        for phase in phases:
            e = evaluation[phase].get(str(res))
            cells.append(format_ci(e["top1"], e.get("top1_ci95")) if e else "")
        if paired:
            test = evaluation["after_adaptation"].get(str(res), {}).get("vs_before")
            cells += ([f"{test['only_a']} / {test['only_b']}", format_p(test["p_value"])]
                      if test else ["", ""])
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(evaluation[phases[0]].values())).get("images")
    lines += ["", f"Intervals: Wilson score, {n} images. The paired test compares before and "
              "after adaptation on the same images at the same resolution; p < 0.05 says the "
              "change is unlikely to be chance.", ""]
    return lines


def method_lines(run_dir: Path, recipe) -> list[str]:
    adapt = recipe.stage("adapt")
    if adapt is None or adapt.method == "finetune":
        return []
    path = RunFolder(run_dir).adaptation_record(adapt.name, adapt.method)
    details = json.loads(path.read_text()) if path.exists() else {}
    split = details.get("split", adapt.data_split or recipe.dataset.train_split)
    lines = [f"## Label-free adaptation: `{adapt.method}`", ""]
    if adapt.method == "bn_stats":
        lines.append(f"BN statistics of the adapted modules re-estimated at {adapt.resolution} px "
                     f"over {details.get('images', '?')} images of split `{split}`; no loss, "
                     "no labels.")
    else:
        ref, test = details.get("reference", {}), details.get("test", {})
        lines.append(f"Fréchet model (xi = {details.get('xi', 0.3)}, zeros excluded) fitted on "
                     f"split `{split}`: mu {ref.get('mu', float('nan')):.4f}, sigma "
                     f"{ref.get('sigma', float('nan')):.4f} at {ref.get('resolution')} px; "
                     f"mu {test.get('mu', float('nan')):.4f}, sigma "
                     f"{test.get('sigma', float('nan')):.4f} at {test.get('resolution')} px; "
                     "the affine map between them is applied after the pooling.")
    scored = {recipe.evaluate.split} | ({recipe.predict.split} if recipe.predict else set())
    if split in scored:
        lines.append(f"Transductive: split `{split}` is also evaluated or predicted, so the "
                     "adaptation saw (without labels) the images it is then scored on.")
    return lines + [""]


def markdown_lines(run_dir: Path, recipe) -> list[str]:
    """Every section, for ``fgvc.report``; empty when the run has nothing to show."""
    from fgvc.runfolder import RunFolder

    evaluation = RunFolder(run_dir).read_evaluation()
    return (confidence_lines(evaluation) + method_lines(run_dir, recipe)
            + activations.markdown_lines(run_dir))
