"""Recipes and dataset cards ship with the package: ``fgvc run quickstart``, ``fgvc recipes list``
and ``fgvc datasets card NAME`` work from any directory, in a checkout and from a built wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

import fgvc
from fgvc.cli import main
from fgvc.datasets.cards import CARDS, render_card
from fgvc.recipes.library import (
    RecipeNotFoundError,
    resolve_recipe,
    shipped_recipe,
    shipped_recipes,
)
from fgvc.recipes.recipe import load_recipe
from fgvc.recipes.schema import SchemaError

REPO = Path(__file__).resolve().parents[1]
REPO_RECIPES = sorted(p.relative_to(REPO / "recipes").with_suffix("").as_posix()
                      for p in (REPO / "recipes").rglob("*.yaml"))
# The quickstart shrunk to seconds (the tiny data of tests/conftest.py, timm's test_resnet).
TINY_QUICKSTART = [
    "--set", "dataset.options={num_classes: 4, train_per_class: 6, val_per_class: 3, "
             "test_per_class: 3, min_side: 40, max_side: 64, seed: 3}",
    "--set", "model.arch=test_resnet", "--set", "stages.train.resolution=32",
    "--set", "stages.train.epochs=1", "--set", "stages.train.batch_size=8",
    "--set", "stages.train.validate_every=1", "--set", "stages.adapt.resolution=48",
    "--set", "stages.adapt.epochs=1", "--set", "stages.adapt.batch_size=8",
    "--set", "evaluate.resolutions=[32, 48]",
]


# --- the library, in the checkout -------------------------------------------------------------

def test_every_recipe_in_the_repository_is_shipped_with_a_one_line_description():
    found = shipped_recipes()
    assert sorted(found) == REPO_RECIPES
    assert "quickstart" in found and "table3/cub200" in found
    for recipe in found.values():
        assert recipe.description and "\n" not in recipe.description and len(recipe.description) <= 100
        assert not recipe.description.startswith("#")
    assert found["table3/cub200"].description.startswith("Table 3 row: CUB-200-2011 with SENet-154")


def test_a_name_resolves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("quickstart").read_text() == (REPO / "recipes/quickstart.yaml").read_text()
    assert resolve_recipe("table3/cub200").read_text() == (REPO / "recipes/table3/cub200.yaml").read_text()
    # A repository path outside the repository (an ensemble's members) falls back to the shipped copy.
    assert resolve_recipe("recipes/herbarium2019_senet154.yaml").name == "herbarium2019_senet154.yaml"
    recipe = load_recipe("quickstart", ["stages.train.epochs=3"])
    assert recipe.name == "quickstart" and recipe.stage("train").epochs == 3


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
    mine["name"] = "mine"
    Path("quickstart").write_text(yaml.safe_dump(mine))
    assert resolve_recipe("quickstart") == Path("quickstart")
    assert load_recipe("quickstart").name == "mine"


def test_misspelt_name_and_path_say_what_was_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeNotFoundError, match=r"'quikstart' is neither a file nor a shipped "
                                                  r"recipe \(did you mean 'quickstart'\?\)"):
        resolve_recipe("quikstart")
    with pytest.raises(SchemaError, match=r"did you mean 'table3/cub200'\?"):
        load_recipe("table3/cub2000")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "birds_448.yaml").write_text("name: x\n")
    with pytest.raises(RecipeNotFoundError) as err:
        resolve_recipe("mine/birds_488.yaml")
    assert str(err.value) == ("recipe file not found: mine/birds_488.yaml (did you mean "
                              "'mine/birds_448.yaml'?); a shipped recipe can be named instead of a "
                              "path (`fgvc recipes list`)")
    with pytest.raises(RecipeNotFoundError, match="no shipped recipe 'quickstrat' "
                                                  r"\(did you mean 'quickstart'\?\)"):
        shipped_recipe("quickstrat")


def test_api_run_and_table3_find_shipped_recipes(tmp_path, monkeypatch):
    from fgvc.api import _recipe_of
    from fgvc.workflows.table3 import row_recipe

    monkeypatch.chdir(tmp_path)
    recipe, path = _recipe_of("quickstart", {"stages__train__epochs": 2})
    assert recipe.stage("train").epochs == 2 and path == shipped_recipe("quickstart").path
    row = row_recipe("cub200", tmp_path / "cub", [])
    assert row.name == "table3_cub200" and row.dataset.root == str(tmp_path / "cub")


# --- the commands -----------------------------------------------------------------------------

def test_recipes_list_prints_one_line_per_recipe(capsys):
    assert main(["recipes", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(shipped_recipes())
    quick = next(line for line in lines if line.startswith("quickstart "))
    assert "The walking skeleton on the embedded synthetic dataset" in quick


def test_recipes_show_prints_and_copies_the_yaml(tmp_path, capsys):
    text = (REPO / "recipes/table3/cub200.yaml").read_text()
    assert main(["recipes", "show", "table3/cub200"]) == 0
    assert capsys.readouterr().out == text
    out = tmp_path / "my_cub.yaml"
    assert main(["recipes", "show", "table3/cub200", "--out", str(out)]) == 0
    # the copy's editor schema line points beside it (fgvc schema --out writes the file there)
    copied = text.replace("$schema=../fgvc.schema.json", "$schema=fgvc.schema.json", 1)
    assert out.read_text() == copied and load_recipe(out).name == "table3_cub200"
    assert main(["recipes", "show", "quickstart", "--out", str(out)]) == 2
    assert f"--out {out}: already exists (--force overwrites it)" in capsys.readouterr().err
    assert out.read_text() == copied
    assert main(["recipes", "show", "quickstart", "--out", str(out), "--force"]) == 0
    assert out.read_text() == (REPO / "recipes/quickstart.yaml").read_text()
    assert main(["recipes", "show", "table3/cub"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'table3/cub200'?" in err and "Traceback" not in err


def test_datasets_card_prints_the_card(capsys):
    assert main(["datasets", "card", "cub200"]) == 0
    out = capsys.readouterr().out
    assert out == render_card("cub200") == (REPO / "datasets/cub200.md").read_text()
    assert main(["datasets", "card", "cub2000"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: no dataset card 'cub2000' (did you mean 'cub200'?); `fgvc datasets list` "
                   "shows the datasets\n")


def test_messages_point_at_commands_not_repository_files():
    """Installed from a wheel there is no datasets/<name>.md, recipes/ or README.md to open."""
    from fgvc.datasets.files import card_hint

    assert card_hint("cub200") == "`fgvc datasets card cub200` says where to get it and the expected layout"
    assert set(CARDS) >= {"cub200", "parquet", "herbarium2020"}
    from fgvc.cli import DESCRIPTION, EPILOG

    assert "fgvc run quickstart " in DESCRIPTION and "README" not in DESCRIPTION + EPILOG


@pytest.mark.parametrize("args", [["recipes", "list"], ["recipes", "show", "quickstart"],
                                  ["datasets", "card", "cub200"]])
def test_recipe_and_card_commands_never_import_torch(args, tmp_path):
    code = ("import sys\nfrom fgvc.cli import main\ncode = main(sys.argv[1:])\n"
            "print('HEAVY:' + ','.join(m for m in ('torch', 'timm') if m in sys.modules), "
            "file=sys.stderr)\nraise SystemExit(code)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout, done.stderr
    assert done.stderr.rstrip().endswith("HEAVY:"), done.stderr


# --- the built wheel, installed into a fresh environment --------------------------------------

BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "fgvc", "recipes")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (so the checkout gets no build/ folder)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here (pip wheel --no-build-isolation needs pip and "
                    f"setuptools in this environment): {done.stderr.strip()[-300:]}")
    return next(out.glob("fgvc-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment with the wheel installed and this environment's dependencies
    visible through a plain .pth line (which runs no .pth file of its own, so the editable fgvc
    finder here stays invisible): the bin folder and a clean environment to run it with."""
    if os.name == "nt":
        pytest.skip("the fresh-environment check uses a POSIX virtual environment layout")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # Install before the dependencies become visible, so pip sees nothing else to replace.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "fgvc_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv / "bin", env


def _fgvc(installed, cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    bin_dir, env = installed
    return subprocess.run([str(bin_dir / "fgvc"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_carries_every_recipe_and_no_user_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.removeprefix("fgvc/_shipped/recipes/").removesuffix(".yaml")
                     for n in names if n.startswith("fgvc/_shipped/recipes/")
                     and n.endswith(".yaml"))
    assert shipped == REPO_RECIPES
    assert "fgvc/_shipped/recipes/fgvc.schema.json" in names  # what the recipes' first line names
    assert {n.split("/")[0] for n in names} == {"fgvc", f"fgvc-{fgvc.__version__}.dist-info"}


def test_installed_wheel_lists_recipes_and_prints_cards_anywhere(installed, tmp_path):
    bin_dir, env = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import fgvc; print(fgvc.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), where.stdout
    listed = _fgvc(installed, tmp_path, "recipes", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(shipped_recipes())
    card = _fgvc(installed, tmp_path, "datasets", "card", "cub200")
    assert card.returncode == 0 and card.stdout == render_card("cub200"), card.stderr
    shown = _fgvc(installed, tmp_path, "recipes", "show", "table3/cub200")
    assert shown.stdout == (REPO / "recipes/table3/cub200.yaml").read_text()
    missing = _fgvc(installed, tmp_path, "validate", "quickstrat")
    assert missing.returncode == 2 and "did you mean 'quickstart'?" in missing.stderr
    assert list(tmp_path.iterdir()) == []


def test_installed_wheel_runs_the_quickstart_from_an_empty_directory(installed, tmp_path):
    done = _fgvc(installed, tmp_path, "run", "quickstart", *TINY_QUICKSTART, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done: runs/quickstart/report.md" in done.stdout
    assert (tmp_path / "runs/quickstart/summary.json").is_file()
    assert (tmp_path / "datasets/synthetic/meta.json").is_file()  # the data root is the user's
    recipe = yaml.safe_load((tmp_path / "runs/quickstart/recipe.yaml").read_text())
    assert recipe["model"]["arch"] == "test_resnet" and recipe["stages"][0]["epochs"] == 1
