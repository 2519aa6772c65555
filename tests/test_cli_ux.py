"""The command line as a user meets it: fast start without torch, quiet pipes, did-you-mean,
commands that do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fgvc.cli import main

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = """
import sys
from fgvc.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("torch", "torchvision", "timm", "sklearn", "matplotlib") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


def _light(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["datasets", "list"],
                                  ["run", "--help"], ["submit", "--help"],
                                  ["resolution", "--train", "224"]])
def test_light_commands_never_import_torch(args):
    done = _light(*args)
    assert "HEAVY:\n" in done.stderr or done.stderr.rstrip().endswith("HEAVY:"), done.stderr
    assert done.stdout


def test_datasets_info_and_verify_read_without_torch(tiny_data_root):
    for command in ("info", "verify"):
        done = _light("datasets", command, "synthetic", "--root", str(tiny_data_root))
        assert done.stderr.rstrip().endswith("HEAVY:"), done.stderr
    assert "4 classes" in _light("datasets", "info", "synthetic", "--root",
                                 str(tiny_data_root)).stdout


def test_submit_runs_without_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "KAGGLE_KEY", "KAGGLE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    csv = tmp_path / "s.csv"
    csv.write_text("id,predicted\n1,2\n")
    done = _light("submit", str(csv), "--competition", "c", "-m", "m")
    assert "error: no Kaggle credentials found" in done.stderr
    assert done.stderr.rstrip().endswith("HEAVY:"), done.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == "fgvc 0.1.0"


def test_piping_into_head_ends_quietly():
    """`fgvc resolution ... | head -1`: the reader goes away; no traceback, no noise."""
    proc = subprocess.Popen([sys.executable, "-m", "fgvc", "resolution", "--train", "32",
                             "--multiple", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its lines
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"train 32 px")
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""
    assert proc.returncode in (0, 141)


def test_broken_pipe_inside_main_is_quiet(monkeypatch, capsys):
    import fgvc.cli as cli

    def broken(args):
        raise BrokenPipeError

    monkeypatch.setitem(cli.COMMANDS, "resolution", broken)
    monkeypatch.setattr(cli, "_quiet_broken_pipe", lambda: 141)
    assert main(["resolution", "--train", "64"]) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args,suggestion", [
    (["rnu", "x.yaml"], "did you mean 'run'?"),
    (["datasets", "lsit"], "did you mean 'list'?"),
    (["predict", "runs/x", "--crops", "tencrop"], "did you mean 'ten_crop'?"),
])
def test_did_you_mean_for_commands_and_choices(args, suggestion, capsys):
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2 and suggestion in capsys.readouterr().err


def test_did_you_mean_for_datasets_architectures_and_recipe_keys(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "bad", "dataset": {"name": "cub2000"}, "model": {"arch": "resnet5O"},
        "stages": [{"name": "train", "resolution": 32, "batch_sise": 8}], "evalute": {}}))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    for hint in ("evalute: unknown field (did you mean 'evaluate'?)",
                 "batch_sise: unknown field (did you mean 'batch_size'?)",
                 "unknown dataset 'cub2000' (did you mean 'cub200'?)",
                 "unknown model 'resnet5O' (did you mean 'resnet50'?)"):
        assert hint in err, hint
    assert main(["datasets", "info", "nabird"]) == 2
    assert "did you mean 'nabirds'?" in capsys.readouterr().err
    assert main(["models", "list", "resnet5O"]) == 2
    assert "unknown model 'resnet5O' (did you mean 'resnet50'?)" in capsys.readouterr().err


def test_every_option_shows_its_help_choices_and_default():
    import argparse

    from fgvc.cli import HelpFormatter, build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    for parser in parsers(build_parser()):
        formatter = HelpFormatter(parser.prog)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog} {action.dest}: no help"
            text = formatter._get_help_string(action)
            if action.choices and action.option_strings:
                assert "choices" in text, f"{parser.prog} {action.dest}"
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in text, f"{parser.prog} {action.dest}: {text}"


def test_resolution_rejects_non_positive_sizes(capsys):
    for args in (["--train", "0"], ["--train", "-224"], ["--train", "224", "--multiple", "0"]):
        with pytest.raises(SystemExit) as exit:
            main(["resolution", *args])
        assert exit.value.code == 2
        assert "must be a positive number of pixels" in capsys.readouterr().err
    assert main(["resolution", "--train", "224", "--crop-pct", "1.5"]) == 2
    assert "--crop-pct 1.5: expected a ratio in (0, 1]" in capsys.readouterr().err


def test_readme_resolution_figures_match_the_command(capsys):
    readme = (REPO / "docs/guide/resolution.md").read_text()  # the figures' page in the docs
    main(["resolution", "--train", "224"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] in readme
    assert "| 224 | 0.81 |" in out and "0.81 at 224/224" in readme
    main(["resolution", "--train", "64", "--multiple", "16"])
    assert "about 80 px" in capsys.readouterr().out and "`--train 64 --multiple 16` gives 80 px" in readme
    main(["resolution", "--train", "64", "--multiple", "8", "--crop-scale", "0.25", "1"])
    assert "about 72 px" in capsys.readouterr().out
    assert "`--crop-scale 0.25 1 --multiple 8`) match at about 72 px" in readme


def test_datasets_info_never_generates(tmp_path, capsys):
    root = tmp_path / "synthetic"
    assert main(["datasets", "info", "synthetic", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "no generated synthetic dataset" in err and "fgvc run quickstart" in err
    assert not root.exists()


def test_run_says_when_and_where_it_generates(tmp_path, caplog):
    import logging

    from fgvc.datasets import load_dataset

    caplog.set_level(logging.INFO)
    root = tmp_path / "gen"
    load_dataset("synthetic", root, {"num_classes": 2, "train_per_class": 1, "val_per_class": 1,
                                     "test_per_class": 1, "min_side": 32, "max_side": 40})
    assert f"generating the embedded synthetic dataset (6 images, once; later runs reuse it) " \
           f"in {root.resolve()}" in caplog.text


def _write(tmp_path, recipe: dict) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_sweep_without_candidates_is_refused(tiny_recipe_dict, tmp_path, capsys):
    assert main(["sweep", _write(tmp_path, tiny_recipe_dict)]) == 2
    err = capsys.readouterr().err
    assert "sweep_resolutions is not set" in err and len(err.strip().splitlines()) == 1


def test_sweep_warns_when_choosing_on_the_reported_split(tiny_recipe_dict, tmp_path, caplog,
                                                         monkeypatch):
    import logging

    import fgvc.workflows.sweep as sweep
    from fgvc.errors import FgvcError

    monkeypatch.setattr(sweep, "run_protocol", lambda recipe, out, **_: (_ for _ in ()).throw(
        FgvcError("stopped here")))  # a known failure: exit 2 (anything else is internal, 1)
    caplog.set_level(logging.WARNING)
    tiny_recipe_dict["sweep_resolutions"] = [40, 48]
    assert main(["sweep", _write(tmp_path, tiny_recipe_dict)]) == 2
    assert "K_test is chosen on split 'val' and the result is reported on the same split" in caplog.text


def test_validate_says_what_it_means(tiny_recipe_dict, tmp_path, capsys, monkeypatch):
    tiny_recipe_dict["stages"][1]["bn_momentum"] = None
    path = _write(tmp_path, tiny_recipe_dict)
    assert main(["validate", path]) == 0
    out = capsys.readouterr().out
    assert "an exact average over the adaptation batches" in out
    assert f"dataset synthetic at {Path(tiny_recipe_dict['dataset']['root']).absolute()}" in out
    assert "splits train 24, val 12, test 12 (unlabelled)" in out

    tiny_recipe_dict["predict"]["split"] = "holdout"
    tiny_recipe_dict["model"]["pretrained"] = "imagenet"
    tiny_recipe_dict["stages"] = tiny_recipe_dict["stages"][:1]
    assert main(["validate", _write(tmp_path, tiny_recipe_dict)]) == 1
    out = capsys.readouterr().out
    assert "will be downloaded" in out and "no adaptation (no adapt stage)" in out
    assert ("predict.split (and so the submission): dataset 'synthetic' has no split 'holdout'"
            in out)


def test_validate_prints_relative_paths_resolved(tiny_recipe_dict, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_recipe_dict.update(output_root="out", submission={"path": "subs/x.csv"})
    tiny_recipe_dict["dataset"]["root"] = "data/none"
    assert main(["validate", _write(tmp_path, tiny_recipe_dict)]) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'out' / 'tiny'}/ on device cpu" in out
    assert f"{tmp_path / 'data' / 'none'}" in out and "will be generated there" in out
    assert f"submission (generic) -> {tmp_path / 'subs' / 'x.csv'}" in out
