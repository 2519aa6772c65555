"""The report.md sections of the resolution science: how sure each top-1 is (95 % Wilson
interval), whether adaptation changed the predictions beyond chance (McNemar's exact test on
the same images), what a label-free adaptation fitted, and the pooled-activation statistics."""

from __future__ import annotations

import json
from pathlib import Path

from fgvc.analysis import activations
from fgvc.analysis.statistics import format_ci, format_gain, paired_test
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
        head += ["right only after / only before",
                 "gain after - before [95 % CI] (McNemar exact p)"]
    lines = ["## How sure: 95 % Wilson intervals and McNemar's exact test", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in resolutions:
        cells = [str(res)]
        for phase in phases:
            e = evaluation[phase].get(str(res))
            cells.append(format_ci(e["top1"], e.get("top1_ci95")) if e else "")
        if paired:
            test = _vs_before(evaluation, str(res))
            cells += ([f"{test['only_a']} / {test['only_b']}",
                       format_gain(test.get("gain"), test.get("gain_ci95"), test["p_value"])]
                      if test else ["", ""])
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(evaluation[phases[0]].values())).get("images")
    lines += ["", f"Intervals: Wilson score, {n} images. The paired test compares before and "
              "after adaptation on the same images at the same resolution; p < 0.05 says the "
              "change is unlikely to be chance. A gain is the top-1 difference in percentage "
              "points, its interval Newcombe's for paired proportions (method 10).", ""]
    return lines


def _vs_before(evaluation: dict, res: str) -> dict | None:
    """After vs before adaptation at ``res``: computed from the stored per-image hits, else the
    stored test (runs that kept no hits)."""
    after = evaluation["after_adaptation"].get(res, {})
    before = evaluation["before_adaptation"].get(res)
    test = paired_test(after, before) if before else None
    return test.to_dict() if test else after.get("vs_before")


def resolution_gain_lines(evaluation: dict, recipe) -> list[str]:
    """The protocol's gain across resolutions: adapted at the adapt stage's resolution against
    the network before adaptation at its train resolution, on the same images."""
    train, adapt = recipe.stage("train"), recipe.stage("adapt")
    if train is None or adapt is None or train.resolution == adapt.resolution:
        return []
    after = evaluation.get("after_adaptation", {}).get(str(adapt.resolution))
    before = evaluation.get("before_adaptation", {}).get(str(train.resolution))
    test = paired_test(after, before) if after and before else None
    if test is None:
        return []
    return [f"Adapted at {adapt.resolution} px vs before adaptation at the train resolution "
            f"{train.resolution} px, same {test.images} images: "
            f"{format_gain(test.gain, test.gain_ci95, test.p_value)}.", ""]


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
    elif adapt.method == "gaussian":  # its fit and Table 4: report.py's adapted_distribution
        lines.append("Per-channel Gaussian map before the last activation (appendix A.2): "
                     "what was fitted, on which split, is under \"Adapted distribution\" below.")
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
    return (confidence_lines(evaluation) + resolution_gain_lines(evaluation, recipe)
            + method_lines(run_dir, recipe)
            + activations.markdown_lines(run_dir))
