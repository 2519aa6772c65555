"""`fgvc models list` reads a static catalogue (no torch, no timm, one line per architecture)
whose numbers match what the factory builds; `fgvc models show` builds any name on the meta
device for its adaptation groups and data settings; `dir(fgvc)` shows the lazy public API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.cli import main
from fgvc.models import catalog, show


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_list_prints_one_line_per_architecture_without_torch_or_timm():
    out = run_python(
        "import io, sys, contextlib\n"
        "from fgvc.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    assert main(['models', 'list']) == 0\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
        "print(buf.getvalue(), end='')\n")
    loaded, header, *rows, footer = out.splitlines()
    assert loaded == "[]"
    assert header.split()[:4] == ["ARCH", "FAMILY", "PARAMS", "SIZE"]
    assert [r.split()[0] for r in rows] == [e.name for e in catalog.ENTRIES]
    assert len(set(rows)) == len(rows)  # no line printed twice
    assert "fgvc models show ARCH" in footer
    resnet50 = next(r for r in rows if r.startswith("resnet50 "))
    assert resnet50.split()[1:6] == ["ResNet", "25.6M", "224px", "imagenet", "bicubic"]


def test_catalogue_names_are_unique_and_every_note_is_its_own():
    names = [e.name for e in catalog.ENTRIES]
    assert len(names) == len(set(names))
    notes = [e.note for e in catalog.ENTRIES if e.note]
    assert len(notes) == len(set(notes))
    assert {"resnet50", "legacy_senet154", "resnext101_32x48d", "mpncov_resnet152",
            "vit_fgvc_tiny_convstem"} <= set(names)


def test_list_json_records(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(catalog.ENTRIES)
    eva = next(r for r in rows if r["name"] == "eva02_base_patch14_448")
    assert eva["normalisation"] == "clip" and eva["default_resolution"] == 448
    assert eva["mean"] == pytest.approx([0.4815, 0.4578, 0.4082], abs=1e-4)
    assert set(rows[0]) == {"name", "family", "params", "default_resolution", "normalisation",
                            "mean", "std", "interpolation", "note"}


def test_list_of_names_shows_catalogued_and_other_timm_names(capsys):
    assert main(["models", "list", "--json", "resnet50", "resnet10t"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["resnet10t"]["family"] == "ResNet"  # built on the meta device
    assert rows["resnet10t"]["params"] > 0


# A sample across families, norms and sources; the slow test below checks every entry.
SAMPLE = ["resnet50", "efficientnet_b1", "mpncov_resnet50", "vit_fgvc_tiny_convstem",
          "eva02_base_patch14_448", "pretrainedmodels:resnet50"]


def check_entry_against_construction(name: str) -> None:
    if name.startswith("pretrainedmodels:"):
        pytest.importorskip("pretrainedmodels")
    entry = catalog.BY_NAME[name]
    built = show.describe(name)
    assert built["params"] == entry.params
    assert built["default_resolution"] == entry.resolution
    assert built["normalisation"] == entry.norm
    assert built["mean"] == pytest.approx(entry.mean, abs=1e-6)
    assert built["std"] == pytest.approx(entry.std, abs=1e-6)
    assert built["interpolation"] == entry.interpolation


@pytest.mark.parametrize("name", SAMPLE)
def test_catalogue_matches_real_construction(name):
    check_entry_against_construction(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in catalog.ENTRIES if e.name not in SAMPLE])
def test_every_catalogue_entry_matches_real_construction(name):
    check_entry_against_construction(name)


def test_every_catalogued_name_is_one_model_arch_accepts():
    from fgvc.models.names import arch_problem

    for entry in catalog.ENTRIES:
        if entry.name.startswith("pretrainedmodels:"):
            continue  # accepted only where the optional package is installed
        assert catalog.is_listed(entry.name)
        assert arch_problem(entry.name) is None, entry.name
    assert not catalog.is_listed("pretrainedmodels:senet154")  # checked by the factory
    assert not catalog.is_listed("resnet10t")


def test_show_resolves_groups_and_data_settings(capsys):
    assert main(["models", "show", "--json", "resnet50", "mpncov_resnet101"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["resnet50"]["default_resolution"] == 224
    assert rows["resnet50"]["groups"]["last_bn"] == ["layer4.2.bn3"]
    assert rows["resnet50"]["groups"]["pos_embed"].startswith("unresolved:")
    assert rows["resnet50"]["crop_pct"] == pytest.approx(0.875)
    assert rows["mpncov_resnet101"]["groups"]["last_bn"] == ["layer_reduce_bn"]
    assert rows["mpncov_resnet101"]["default_resolution"] == 448
    assert main(["models", "show", "vit_fgvc_tiny_patch8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("vit_fgvc_tiny_patch8  (ViT; class VisionTransformer)")
    assert "681,736" in text
    assert "last_bn / last_norm" in text and "pos_embed           pos_embed" in text


def test_show_unknown_name_is_one_line_with_a_suggestion(capsys):
    assert main(["models", "show", "resnet5O"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "unknown model 'resnet5O' (did you mean 'resnet50'?)" in err
    assert main(["models", "show", "resnet50.nosuchtag"]) == 2
    assert "'resnet50' has no pretrained tag 'nosuchtag'" in capsys.readouterr().err


def test_recipe_with_a_catalogued_arch_parses_without_timm():
    path = Path(__file__).resolve().parents[1] / "recipes" / "inat2019_senet154.yaml"
    out = run_python(
        "import sys\n"
        "from fgvc.recipes.recipe import load_recipe\n"
        f"recipe = load_recipe({str(path)!r})\n"
        "print(recipe.model.arch, sorted(m for m in ('torch', 'timm') if m in sys.modules))\n")
    assert out.strip() == "legacy_senet154 []"


def test_dir_fgvc_lists_the_public_api_without_importing_it():
    out = run_python("import sys, fgvc\nnames = dir(fgvc)\n"
                     "print(' '.join(names)); print('torch' in sys.modules)\n")
    names, torch_loaded = out.splitlines()
    import fgvc

    assert set(fgvc.__all__) <= set(names.split())
    assert {"run", "load_run", "predict", "Run", "__version__"} <= set(names.split())
    assert torch_loaded == "False"
    assert set(fgvc.models.__all__) <= set(dir(fgvc.models))
