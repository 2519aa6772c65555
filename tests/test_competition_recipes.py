"""The paper's competition recipes run end to end, shrunk with --set onto small generated data in
each competition's own layout, and their ensembles write valid Kaggle CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from fgvc.cli import main
from fgvc.datasets import load_dataset
from fgvc.datasets.layouts import write_herbarium2019, write_inaturalist
from fgvc.recipes.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
COMPETITIONS = {
    "inat2019": (["seresnext101", "senet154", "inceptionresnetv2", "mpncov"], "inaturalist2019",
                 ["id", "predicted"]),
    "herbarium2019": (["senet154", "resnet50"], "herbarium2019", ["Id", "Category"]),
}


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("competition_data")
    write_inaturalist(base / "inaturalist2019", 2019, num_classes=4, per_class=3)
    write_herbarium2019(base / "herbarium2019", num_classes=4, per_class=3)
    return {"inaturalist2019": base / "inaturalist2019", "herbarium2019": base / "herbarium2019"}


def shrink(recipe_path: Path, data_root: Path, out: Path) -> list[str]:
    """Overrides that keep the recipe's structure (stages, groups, crops, format) but make it
    tiny: small data, a small network of the same family, 32 -> 48 px, one epoch."""
    recipe = load_recipe(recipe_path)
    small_arch = "mpncov_resnet50" if recipe.model.arch.startswith("mpncov") else "test_resnet"
    sets = [f"dataset.root={data_root}", "dataset.num_workers=0", f"model.arch={small_arch}",
            "model.pretrained=none", f"output_root={out / 'runs'}",
            f"submission.path={out / 'submissions' / (recipe.name + '.csv')}",
            "stages.train.resolution=32", "stages.train.epochs=1", "stages.train.batch_size=6",
            "evaluate.batch_size=8", "predict.batch_size=4"]
    final = 32
    if recipe.stage("adapt"):
        sets += ["stages.adapt.resolution=48", "stages.adapt.epochs=1", "stages.adapt.batch_size=6"]
        final = 48
    sets += [f"evaluate.resolutions={sorted({32, final})}", f"predict.resolutions=[{final}]"]
    return sets


@pytest.mark.parametrize("competition,member", [(c, m) for c, (ms, _, _) in COMPETITIONS.items()
                                                for m in ms])
def test_member_recipe_runs(competition, member, data_roots, tmp_path):
    members, dataset, header = COMPETITIONS[competition]
    path = REPO / "recipes" / f"{competition}_{member}.yaml"
    sets = shrink(path, data_roots[dataset], tmp_path)
    args = ["run", str(path)] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    recipe = load_recipe(path, sets)
    assert recipe.predict.crops == "ten_crop"  # the entry's own TTA survives the shrinking
    rows = list(csv.reader((tmp_path / "submissions" / f"{recipe.name}.csv").open()))
    assert rows[0] == header
    test_ids = {s.image_id for s in load_dataset(dataset, data_roots[dataset]).split("test")}
    assert {r[0] for r in rows[1:]} == test_ids and len(rows) - 1 == len(test_ids)


@pytest.mark.parametrize("competition", list(COMPETITIONS))
def test_ensemble_recipe_runs_its_members_then_reuses_them(competition, data_roots, tmp_path,
                                                           caplog):
    members, dataset, header = COMPETITIONS[competition]
    path = REPO / "recipes" / f"{competition}_ensemble.yaml"
    sets = [f"output_root={tmp_path / 'runs'}",
            f"submission.path={tmp_path / 'submissions' / 'ensemble.csv'}"]
    for i, member in enumerate(members):
        member_sets = shrink(REPO / "recipes" / f"{competition}_{member}.yaml",
                             data_roots[dataset], tmp_path)
        sets.append(f"members.{i}.overrides={yaml.safe_dump(member_sets, default_flow_style=True).strip()}")
    args = ["run", str(path)] + [x for s in sets for x in ("--set", s)]
    assert main(["validate", str(path)] + args[2:]) == 0
    assert main(args) == 0
    for member in members:
        assert (tmp_path / "runs" / f"{competition}_{member}" / "predictions" / "probs.npy").is_file()
    rows = list(csv.reader((tmp_path / "submissions" / "ensemble.csv").open()))
    assert rows[0] == header
    test_ids = {s.image_id for s in load_dataset(dataset, data_roots[dataset]).split("test")}
    assert {r[0] for r in rows[1:]} == test_ids
    report = (tmp_path / "runs" / f"{competition}_ensemble" / "report.md").read_text()
    assert f"{len(members)} member(s)" in report

    # A second run reuses the members instead of training them again.
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(args + ["--force"]) == 0
    assert caplog.text.count("reusing") == len(members)
    assert "running" not in caplog.text
