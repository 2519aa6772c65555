"""`fgvc init` writes a recipe that validates against the data on disk and runs; `fgvc
validate` exits 1 when the data a run needs is missing, and names the field that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fgvc.cli import main
from fgvc.datasets.layouts import write_cub200, write_inaturalist, write_inaturalist_torchvision

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "test_resnet"]  # timm's 0.4M-parameter ResNet, as the other tests train
SHRINK = ["--set", "device=cpu", "--set", "dataset.num_workers=0",
          "--set", "stages.train.epochs=1", "--set", "stages.train.resolution=32",
          "--set", "stages.adapt.epochs=1", "--set", "stages.adapt.resolution=48",
          "--set", "evaluate.resolutions=[32, 48]"]


@pytest.fixture(autouse=True)
def empty_caches(tmp_path, monkeypatch):
    """No pretrained weights anywhere (as on a fresh offline machine), runs under tmp_path."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("init_trees")
    write_cub200(base / "cub")
    write_inaturalist(base / "inat", 2019)
    write_inaturalist_torchvision(base / "inat_tv", 2019)
    from PIL import Image

    folder = base / "folder"
    for split, cls in [("train", "cat"), ("train", "dog"), ("val", "cat"), ("val", "dog")]:
        for n in range(2):
            (folder / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 32), (n * 90, 40, 200)).save(folder / split / cls / f"{n}.jpg")
    (folder / "test").mkdir()
    Image.new("RGB", (40, 32)).save(folder / "test" / "x.jpg")
    return {"cub": base / "cub" / "CUB_200_2011", "inat": base / "inat",
            "inat_tv": base / "inat_tv", "folder": folder}


def init(capsys, *args: str) -> tuple[dict, str]:
    assert main(["init", *args]) == 0
    out = capsys.readouterr().out
    path = args[args.index("--out") + 1]
    return yaml.safe_load(Path(path).read_text()), out


def validate(capsys, *args: str) -> tuple[int, str]:
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cub_official_tarball_layout_validates_and_runs(trees, capsys, tmp_path):
    recipe, out = init(capsys, "--dataset", "cub200", "--root", str(trees["cub"]),
                       "--out", "cub.yaml", *TINY)
    # CUB ships train and test only: validate on a holdout, evaluate the labelled test split.
    assert recipe["dataset"]["val_split"] == "holdout" and recipe["dataset"]["holdout"] == 0.1
    assert recipe["evaluate"]["split"] == "test"
    assert recipe["predict"] is None and recipe["submission"] is None
    assert recipe["name"] == "cub200_test_resnet"
    assert recipe["model"]["pretrained"] == "none"  # nothing cached: no download is attempted
    text = Path("cub.yaml").read_text()
    assert "model.weights: path/to/checkpoint" in text and "hf-hub:timm/test_resnet" in text
    train, adapt = recipe["stages"]
    assert adapt["resolution"] > train["resolution"] == 160  # test_resnet's own size
    assert adapt["trainable"] == ["classifier", "last_bn"]
    assert train["batch_size"] <= 8  # capped by the 8 training images left after the holdout
    assert "fgvc validate cub.yaml" in out and "fgvc run cub.yaml" in out
    assert "fgvc predict runs/cub200_test_resnet --images" in out

    code, shown = validate(capsys, "cub.yaml")
    assert code == 0 and "cub.yaml: valid" in shown and "problems" not in shown
    assert main(["run", "cub.yaml", *SHRINK]) == 0
    assert (tmp_path / "runs" / "cub200_test_resnet" / "report.md").is_file()


def test_inaturalist_official_json_predicts_its_unlabelled_test_split(trees, capsys):
    recipe, _ = init(capsys, "--dataset", "inaturalist2019", "--root", str(trees["inat"]),
                     "--out", "inat.yaml", *TINY)
    assert recipe["dataset"]["val_split"] == "val" and "holdout" not in recipe["dataset"]
    assert recipe["evaluate"]["split"] == "val"
    assert recipe["predict"] == {"split": "test"}
    assert recipe["submission"] == {"format": "inaturalist2019"}
    assert validate(capsys, "inat.yaml")[0] == 0


def test_inaturalist_torchvision_folder_trains_on_trainval_with_a_holdout(trees, capsys):
    recipe, _ = init(capsys, "--dataset", "inaturalist2019", "--root", str(trees["inat_tv"]),
                     "--out", "tv.yaml", *TINY)
    assert recipe["dataset"]["train_split"] == "trainval"
    assert recipe["dataset"]["val_split"] == recipe["evaluate"]["split"] == "holdout"
    assert recipe["predict"] is None
    assert validate(capsys, "tv.yaml")[0] == 0


def test_imagefolder_with_val_and_unlabelled_test(trees, capsys):
    recipe, _ = init(capsys, "--dataset", "imagefolder", "--root", str(trees["folder"]),
                     "--out", "mine.yaml", *TINY)
    assert recipe["dataset"]["val_split"] == "val"
    assert recipe["predict"] == {"split": "test"} and recipe["submission"] == {"format": "generic"}
    assert validate(capsys, "mine.yaml")[0] == 0


def test_init_refuses_overwrite_bad_arch_and_missing_root(trees, capsys):
    Path("cub200.yaml").write_text("mine\n")
    assert main(["init", "--dataset", "cub200", "--root", str(trees["cub"]), *TINY]) == 2
    assert "--out cub200.yaml: already exists (--force overwrites it)" in capsys.readouterr().err
    assert Path("cub200.yaml").read_text() == "mine\n"
    assert main(["init", "--dataset", "cub200", "--root", str(trees["cub"]), "--arch",
                 "resnt50", "--force"]) == 2
    assert "--arch: unknown model 'resnt50' (did you mean" in capsys.readouterr().err
    assert main(["init", "--dataset", "cub200", "--root", "nowhere", *TINY, "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --root nowhere: no such folder") and len(err.splitlines()) == 1
    assert main(["init", "--dataset", "cub20", "--root", str(trees["cub"]), "--force"]) == 2
    assert "did you mean 'cub200'" in capsys.readouterr().err


def test_init_takes_weights_found_in_the_cache(trees, capsys, tmp_path):
    snapshot = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    recipe, _ = init(capsys, "--dataset", "cub200", "--root", str(trees["cub"]),
                     "--out", "cached.yaml", *TINY)
    assert recipe["model"]["pretrained"] == "imagenet"
    assert "found in this machine's cache" in Path("cached.yaml").read_text()


def test_validate_exits_1_on_missing_root_and_0_with_no_data(trees, capsys):
    init(capsys, "--dataset", "cub200", "--root", str(trees["cub"]), "--out", "r.yaml", *TINY)
    code, shown = validate(capsys, "r.yaml", "--set", "dataset.root=gone")
    assert code == 1
    assert "dataset.root: " in shown and "gone does not exist" in shown
    code, shown = validate(capsys, "r.yaml", "--set", "dataset.root=gone", "--no-data")
    assert code == 0 and "not checked (--no-data)" in shown and "problems" not in shown


def test_validate_names_the_field_that_fixes_a_missing_split(trees, capsys):
    init(capsys, "--dataset", "cub200", "--root", str(trees["cub"]), "--out", "r.yaml", *TINY)
    code, shown = validate(capsys, "r.yaml", "--set", "dataset.val_split=val",
                           "--set", "dataset.holdout=0")
    assert code == 1
    assert ("dataset.val_split: dataset 'cub200' has no split 'val' (it has: train, test); set "
            "dataset.val_split: holdout with dataset.holdout: 0.1 (or --set "
            "dataset.val_split=holdout --set dataset.holdout=0.1), or val_split: test") in shown
    code, shown = validate(capsys, "r.yaml", "--set", "evaluate.split=tset")
    assert code == 1 and "no split 'tset' (did you mean 'test'?)" in shown
    # the run refuses with the same words, before any folder is made
    assert main(["run", "r.yaml", "--set", "evaluate.split=tset"]) == 2
    assert "(did you mean 'test'?)" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_shipped_quickstart_validates_without_warnings(capsys):
    code, shown = validate(capsys, str(REPO / "recipes" / "quickstart.yaml"))
    assert code == 0 and "will be generated there on first run" in shown
    assert not [line for line in shown.splitlines() if "warning" in line.lower()]
