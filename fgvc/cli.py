"""The ``fgvc`` command line. Every known failure (an ``FgvcError``: bad input, a recipe the
machine cannot honour, missing or damaged files) is one clear line on stderr, exit status 2.
Anything else is a bug: one line says so and where its full traceback was saved (the run's
``log.txt`` when a run folder is open, else ``$XDG_CACHE_HOME/fgvc/errors/``, by default
``~/.cache/fgvc/errors/``; see ``fgvc.logs.save_traceback``), exit status 1. ``-v`` shows the
traceback instead. A pre-emption signal exits 128 + signal, Ctrl-C 130.

Only light modules are imported here: ``fgvc --help``, ``--version`` and the commands that need
no model (datasets, resolution, submit) never import torch; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import typing

from fgvc import __version__
from fgvc.datasets.base import DatasetError
from fgvc.engine.preemption import Preempted
from fgvc.errors import FgvcError, UsageError
from fgvc.inference.submission import FORMATS
from fgvc.recipes.recipe import CombineName, load_recipe
from fgvc.suggest import did_you_mean

# What the user can fix, reported as one line with exit status 2. Built-in errors are not here:
# a user-facing one is raised (or converted where it arises) as an FgvcError subclass.
USER_ERRORS = (FgvcError,)


DESCRIPTION = """\
Fine-grained image classification with FixRes: train at a low resolution, then adapt the
classifier and the last batch-norm to a higher test resolution, and report accuracy at every
test resolution, per class, and on the test split.

Start here:
  fgvc run quickstart                   train + adapt + evaluate on the embedded dataset (CPU, < 5 min)
  fgvc recipes list                     the shipped recipes; `recipes show NAME` prints one to copy
  fgvc init --dataset cub200 --root DIR  a commented recipe for your data on disk
  fgvc validate RECIPE                  check a recipe and print what it would do; runs nothing
  fgvc datasets list                    the datasets fgvc reads; `datasets info NAME` for what is on disk
  fgvc resolution --train 224           which test resolution matches a train resolution
"""

EPILOG = """\
A run writes runs/<name>/: report.md (with PNG figures), metrics.jsonl, TensorBoard events
(tensorboard --logdir runs), checkpoints, predictions and a submission CSV.
`fgvc COMMAND --help` explains each command; `fgvc datasets card NAME` describes a dataset.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its choices and default, unless it already names them."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.help is argparse.SUPPRESS:
            return text
        if action.choices and "choices" not in text and action.option_strings:
            text += f" (choices: {', '.join(map(str, action.choices))})"
        default = action.default
        if (action.option_strings and default not in (None, False, [], argparse.SUPPRESS)
                and "default" not in text):
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            text += f" (default: {shown})"
        return text


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelt command or choice."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            message += did_you_mean(match.group(1), re.findall(r"'([^']*)'", match.group(2)))
        super().error(message)


def _positive(unit: str):
    """An argparse type for a whole number >= 1 of ``unit`` (pixels, images...)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number{unit}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number{unit}, got {value}")
        return value

    return parse


positive_int = _positive(" of pixels")
positive_count = _positive("")


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe file or a shipped recipe name (`fgvc recipes list`), "
                                       "e.g. quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set stages.train.epochs=3 "
                             "(repeatable; lists by index or stage name)")


def add_job_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    """Where and with what a job runs (fgvc/workflows/launch.py): SLURM or this machine."""
    parser.add_argument("--executor", choices=("slurm", "local"), default=default,
                        help="submit through submitit: slurm (sbatch), or local (the same job "
                             "on this machine)" + ("" if default else
                                                  "; one job per row, as a job array "
                                                  "(default: run here, one after the other)"))
    parser.add_argument("--nodes", type=positive_count, default=1, help="nodes per job")
    parser.add_argument("--gpus-per-node", type=positive_count, default=1,
                        help="GPUs per node, one task (process) each")
    parser.add_argument("--cpus-per-task", type=positive_count, default=10,
                        help="CPU cores per task (data loading workers)")
    parser.add_argument("--time", default="24:00:00", metavar="HH:MM:SS",
                        help="the job's time limit; SIGUSR1 arrives 120 s before it")
    parser.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    parser.add_argument("--account", help="SLURM account to charge")


def job_resources(args: argparse.Namespace):
    from fgvc.workflows.launch import JobResources

    return JobResources(executor=args.executor, nodes=args.nodes,
                        gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                        time=args.time, partition=args.partition, account=args.account)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fgvc", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"fgvc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)

    run = sub.add_parser("run", help="run a recipe: train, adapt, evaluate, predict, submit")
    _add_recipe_args(run)
    group = run.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the latest run of this recipe where it stopped")
    group.add_argument("--force", action="store_true",
                       help="replace runs/<name> and an existing submission CSV")
    run.add_argument("--allow-changes", nargs="+", default=[], metavar="FIELD",
                     help="with --resume: accept these recipe fields differing from the run's "
                          "recipe.yaml (e.g. stages.train.epochs; a section name covers its "
                          "fields); recorded in the run's recipe_changes.jsonl")

    resume = sub.add_parser("resume", help="continue a stopped run from its own recipe.yaml")
    resume.add_argument("run_dir", help="the run folder, e.g. runs/quickstart")
    resume.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change a field of the run's recipe (repeatable); each changed "
                             "field must also be named in --allow-changes")
    resume.add_argument("--allow-changes", nargs="+", default=[], metavar="FIELD",
                        help="accept these fields differing from the run's recipe.yaml (e.g. "
                             "stages.train.epochs); recorded in recipe_changes.jsonl")

    report = sub.add_parser("report", help="rebuild a finished run's report.md and its "
                                           "figures from what the run saved")
    report.add_argument("run_dir", help="the run folder, e.g. runs/quickstart")

    validate = sub.add_parser("validate", help="check a recipe and what it needs on disk, print "
                                               "its plan; runs nothing; exit 0 only when `fgvc "
                                               "run` would start")
    _add_recipe_args(validate)
    validate.add_argument("--no-data", action="store_true",
                          help="check the recipe alone: do not look for the dataset or weights")

    predict = sub.add_parser(
        "predict", help="predict again with a finished run's weights (other crops, resolutions "
                        "or split), or predict your own images (--images)",
        epilog="your own images: fgvc predict runs/quickstart --images photos/ --top-k 5 "
               "--out preds.csv\nwrites path,label_1,score_1,...,label_5,score_5 (class names, "
               "probabilities, best first)\nat the run's adapted resolution with its test "
               "transform; files that cannot be read are left out and named.")
    predict.add_argument("run_dir", help="the run folder, e.g. runs/quickstart, or an `fgvc "
                                         "export` folder (with --images)")
    predict.add_argument("--images", nargs="+", metavar="FILE|DIR|GLOB",
                         help="predict these images instead of a split: files, folders (walked "
                              "recursively for .jpg .jpeg .png .webp .bmp .gif .tif .tiff, any "
                              "case, sorted; hidden files skipped) or quoted globs; writes a CSV")
    predict.add_argument("--top-k", type=positive_count,
                         help="with --images: classes per image in the CSV, best first; more "
                              "than the run's classes gives all of them (default: 5)")
    predict.add_argument("--split", help="split to predict (default: the recipe's)")
    predict.add_argument("--resolutions", type=positive_int, nargs="+",
                         help="test resolution(s), probabilities averaged (default: the recipe's)")
    predict.add_argument("--crops", choices=["center", "center_flip", "ten_crop"],
                         help="crops per image (default: the recipe's)")
    predict.add_argument("--average", choices=["probs", "logits"],
                         help="how the crops of an image are combined (default: the recipe's)")
    predict.add_argument("--keep-top-k", type=positive_int,
                         help="store only each image's k best classes (default: all classes)")
    predict.add_argument("--out", help="predictions directory (default: in the run folder); "
                                       "with --images the CSV file, '-' for standard output "
                                       "(default: RUN/predictions-images.csv)")
    predict.add_argument("--submission", help="also write a submission CSV here")
    predict.add_argument("--format", default="generic", choices=list(FORMATS), metavar="FORMAT",
                         help="submission format")
    predict.add_argument("--force", action="store_true",
                         help="overwrite existing outputs (otherwise an existing one is refused)")

    ensemble = sub.add_parser("ensemble", help="average saved predictions (crops, resolutions, "
                                               "models) into one file and optionally a submission")
    ensemble.add_argument("predictions", nargs="+",
                          help="predictions directories, run folders (their predictions/) or "
                               ".npz files of earlier runs")
    ensemble.add_argument("--weights", type=float, nargs="+",
                          help="one weight per member (default: equal weights)")
    ensemble.add_argument("--combine", choices=list(typing.get_args(CombineName)), default="probs",
                          help="average probabilities, log-probabilities or logits")
    ensemble.add_argument("--out", required=True, help="the combined predictions directory")
    ensemble.add_argument("--submission", help="also write a submission CSV here")
    ensemble.add_argument("--format", default="generic", choices=list(FORMATS), metavar="FORMAT",
                          help="submission format")
    ensemble.add_argument("--force", action="store_true", help="overwrite existing outputs")

    submit = sub.add_parser("submit", help="send a submission CSV to a Kaggle competition")
    submit.add_argument("file", help="the CSV")
    submit.add_argument("--competition", required=True, help="e.g. inaturalist-2019-fgvc6")
    submit.add_argument("-m", "--message", required=True, help="the submission's description")

    sweep = sub.add_parser("sweep", help="train once, adapt at each of sweep_resolutions, keep "
                                         "the best on validation, report the evaluation split")
    _add_recipe_args(sweep)
    sweep.add_argument("--out", help="output folder (default: <output_root>/<name>-sweep)")
    sweep.add_argument("--final", action="store_true",
                       help="after choosing K_test, retrain on the whole training split "
                            "(no hold-out) and report that network")
    add_job_args(sweep, default=None)

    init = sub.add_parser("init", help="write a commented recipe for a dataset on disk (splits, "
                                       "resolutions, batch size, weights chosen from what is "
                                       "there)")
    init.add_argument("--dataset", required=True, help="dataset name, see `fgvc datasets list`")
    init.add_argument("--root", help="dataset root (default: datasets/<name>)")
    init.add_argument("--arch", default="resnet50", help="any timm name, e.g. convnext_base")
    init.add_argument("--out", help="recipe file to write (default: <dataset>.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    init.add_argument("--resolution", type=positive_int,
                      help="train resolution K_train (default: the network's own size); the "
                           "adapt resolution follows it")
    init.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="adapter option, as dataset.options in a recipe")

    resolution = sub.add_parser("resolution", help="the paper's object-size arithmetic: which "
                                                   "test resolution matches a train resolution")
    resolution.add_argument("--train", type=positive_int, required=True,
                            help="train resolution K_train in pixels")
    resolution.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0],
                            metavar=("MIN", "MAX"), help="RandomResizedCrop area range")
    resolution.add_argument("--crop-pct", type=float, default=0.875,
                            help="test DA crop ratio (centre crop side / resized side)")
    resolution.add_argument("--multiple", type=positive_int, default=32,
                            help="round the matching resolution to this multiple")

    table3 = sub.add_parser("table3", help="the paper's Table 3 transfer benchmark, resumable")
    table3.add_argument("--datasets", nargs="+", help="rows to run (default: all seven)")
    table3.add_argument("--root", action="append", default=[], metavar="DATASET=PATH",
                        help="data root of a row (default: datasets/<name>)")
    table3.add_argument("--out", default="runs/table3", help="output folder")
    table3.add_argument("--smoke", action="store_true",
                        help="small generated data in each dataset's layout, tiny model, CPU")
    table3.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a field of every row's recipe")
    table3.add_argument("--final", action="store_true",
                        help="the protocol's last step: after choosing K_test on the hold-out, "
                             "retrain on the whole training split and report that network")
    add_job_args(table3, default=None)

    launch = sub.add_parser(
        "launch", help="submit a run as a SLURM job through submitit (one task per GPU, "
                       "torchrun's environment); pre-empted, it checkpoints and requeues itself",
        epilog="fgvc launch recipes/cub200.yaml --nodes 2 --gpus-per-node 8 --time 24:00:00 "
               "--partition gpu\nprints the job id, its log files and the run folder; "
               "--dry-run prints the sbatch file instead. Needs: pip install 'fgvc[slurm]'.")
    _add_recipe_args(launch)
    add_job_args(launch, default="slurm")
    launch.add_argument("--resume", action="store_true",
                        help="continue the latest run of this recipe (default: a new run folder)")
    launch.add_argument("--dry-run", action="store_true",
                        help="print the sbatch parameters and submit nothing")
    launch.add_argument("--wait", action="store_true",
                        help="wait for the job to end (--executor local always waits)")

    acts = sub.add_parser("activations", help="pooled-feature statistics (zeros, > 2, mean, "
                                              "percentiles, CDF) before and after adaptation")
    acts.add_argument("run_dir", help="a finished run folder, e.g. runs/quickstart")
    acts.add_argument("--resolutions", type=int, nargs="+",
                      help="test resolutions (default: the recipe's evaluation resolutions)")
    acts.add_argument("--split", help="split to measure (default: the recipe's evaluate.split)")
    acts.add_argument("--max-images", type=int, default=2000,
                      help="images (crops) per resolution, first of the split (default 2000)")

    export = sub.add_parser(
        "export", help="export a finished run's network at its adapted resolution, with its "
                       "test preprocessing and class names: ONNX, torch program or timm folder",
        epilog="fgvc export runs/quickstart --format onnx   -> runs/quickstart/export-onnx-80/\n"
               "model.onnx, preprocess.json, classes.json, README.md; serve it with\n"
               "fgvc predict runs/quickstart/export-onnx-80 --images photos/ (needs only "
               "onnxruntime).\nONNX needs the export extra: pip install 'fgvc[export]'.")
    export.add_argument("run_dir", help="the run folder, e.g. runs/quickstart")
    export.add_argument("--format", dest="export_format", default="onnx", metavar="FORMAT",
                        help="onnx (onnxruntime), torchscript (a torch.export program, or a "
                             "TorchScript trace where torch.export fails) or timm (config.json "
                             "+ model.safetensors, loads in timm)")
    export.add_argument("--resolution", type=positive_int,
                        help="input size K (default: the run's adapted test resolution)")
    export.add_argument("--out", help="the export folder (default: RUN/export-FORMAT-K)")
    export.add_argument("--force", action="store_true", help="replace an existing --out folder")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |logit difference| accepted between the exported model "
                             "and the network on the check images")
    export.add_argument("--push", metavar="REPO",
                        help="also upload the folder to this Hugging Face Hub repository "
                             "(needs a network and a token: `huggingface-cli login`)")

    models = sub.add_parser("models", help="the supported architectures")
    msub = models.add_subparsers(dest="models_command", required=True)
    m_list = msub.add_parser("list", help="one line per architecture: family, size, resolution, "
                                          "normalisation (instant: no model is built)")
    m_list.add_argument("--json", action="store_true", help="machine-readable records")
    m_list.add_argument("names", nargs="*", help="only these architectures (any timm name works)")
    m_show = msub.add_parser("show", help="one architecture in full: parameters, data settings "
                                          "and the modules of every adaptation group")
    m_show.add_argument("--json", action="store_true", help="machine-readable records")
    m_show.add_argument("names", nargs="+", metavar="ARCH", help="any timm name, e.g. resnet50")

    recipes = sub.add_parser("recipes", help="the recipes that ship with fgvc: list them, print one")
    rsub = recipes.add_subparsers(dest="recipes_command", required=True)
    rsub.add_parser("list", help="every shipped recipe's name and what it does")
    r_show = rsub.add_parser("show", help="print a shipped recipe's YAML, to read or copy")
    r_show.add_argument("name", help="a shipped recipe name, e.g. quickstart or table3/cub200")
    r_show.add_argument("--out", help="write a copy to this file instead of printing it")
    r_show.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    schema = sub.add_parser("schema", help="print the recipe's JSON Schema, for editors that "
                                           "complete and check recipe fields")
    schema.add_argument("--out", help="write it to this file instead of printing it, e.g. "
                                      "fgvc.schema.json beside your recipes")
    schema.add_argument("--force", action="store_true", help="overwrite an existing --out file")

    datasets = sub.add_parser("datasets", help="list, describe, inspect, export and verify datasets")
    dsub = datasets.add_subparsers(dest="datasets_command", required=True)
    ds_list = dsub.add_parser("list", help="the datasets fgvc reads, with their official sizes")
    ds_list.add_argument("--json", action="store_true", help="machine-readable output")
    ds_card = dsub.add_parser("card", help="a dataset's card: where to get it, its layout, licence")
    ds_card.add_argument("name", help="dataset name, see `fgvc datasets list`")
    for name, helptext in (("info", "what is on disk: counts per split, classes, missing files"),
                           ("export", "one split as CSV id,path,label,category_id"),
                           ("verify", "open every image; exit 1 if any is missing or unreadable")):
        cmd = dsub.add_parser(name, help=helptext)
        cmd.add_argument("name", help="dataset name, see `fgvc datasets list`")
        cmd.add_argument("--root", help="dataset root (default: datasets/<name>)")
        cmd.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="adapter option, as dataset.options in a recipe")
        cmd.add_argument("--integrity", choices=("strict", "warn"), default="strict",
                         help="as dataset.integrity: warn accepts repeated entries and images "
                              "in two splits with a warning")
        cmd.add_argument("--follow-symlinks-outside", action="store_true",
                         help="as dataset.follow_symlinks_outside: read images through symbolic "
                              "links that lead out of the root (refused by default)")
        if name == "info":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "export":
            cmd.add_argument("--split", required=True, help="split to export, e.g. train")
            cmd.add_argument("--out", help="write to this file instead of standard output")
        if name == "verify":
            cmd.add_argument("--max-image-pixels", type=int, default=89_478_485,
                             help="as dataset.max_image_pixels (default: Pillow's)")
            cmd.add_argument("--strict", action="store_true",
                             help="exit 1 also for images the metadata lists but that were never "
                                  "downloaded (Birdsnap's dead URLs; a warning otherwise)")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.progress import process_started
    from fgvc.recipes.recipe import EnsembleRecipe
    from fgvc.workflows.ensemble_run import run_ensemble
    from fgvc.workflows.pipeline import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.allow_changes and not args.resume:
        raise UsageError("--allow-changes goes with --resume")
    if isinstance(recipe, EnsembleRecipe):
        run_dir = run_ensemble(recipe, Path(args.recipe), force=args.force)
    else:
        run_dir = run_recipe(recipe, resume=args.resume, force=args.force,
                             allow_changes=args.allow_changes, started=process_started())
    return _print_report(run_dir)


def cmd_resume(args: argparse.Namespace) -> int:

    from fgvc.progress import process_started
    from fgvc.recipes.recipe import apply_overrides, parse_recipe
    from fgvc.runfolder import RunFolder
    from fgvc.workflows.pipeline import run_recipe
    from fgvc.workflows.resume import load_run_recipe

    folder = RunFolder.open(args.run_dir)
    if args.overrides:
        data = apply_overrides(folder.read_recipe_data(), args.overrides,
                               str(folder.recipe_path))
        recipe = parse_recipe(data, str(folder.recipe_path))
    else:
        recipe = load_run_recipe(folder.path)
    if folder.finished and not args.overrides:
        print(f"{folder.path} is finished: nothing to do ({folder.report_path}; `fgvc report "
              f"{folder.path}` rebuilds the report, `fgvc predict {folder.path}` predicts again)")
        return 0
    run_recipe(recipe, resume=True, run_dir=folder.path, allow_changes=args.allow_changes,
               started=process_started())
    return _print_report(folder.path)


def cmd_report(args: argparse.Namespace) -> int:
    from fgvc.workflows.report_run import rebuild_report

    print(f"report rebuilt: {rebuild_report(args.run_dir)}")
    return 0


def _print_report(run_dir) -> int:
    from fgvc.engine.distributed import current
    from fgvc.runfolder import RunFolder

    if current().is_main:
        report = RunFolder(run_dir).report_path
        print(f"done: {report}")
        print(report.read_text())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.recipes.plan import describe_ensemble, describe_plan
    from fgvc.recipes.recipe import EnsembleRecipe

    recipe = load_recipe(args.recipe, args.overrides)
    if isinstance(recipe, EnsembleRecipe):
        print(f"{args.recipe}: valid")
        print(describe_ensemble(recipe, Path(args.recipe)))
        return 0
    problems: list[str] = []
    text = describe_plan(recipe, problems, read_data=not args.no_data)
    print(f"{args.recipe}: " + ("valid" if not problems else "valid as a recipe, but what is on "
                                "disk lacks what it names (see problems below)"))
    print(text)
    return 1 if problems else 0


def user_message(err: BaseException) -> str:
    """The error's own words; an error re-raised from a DataLoader worker carries the worker's
    traceback in its message, of which only the last line is for the user."""
    text = str(err)
    if "Traceback" in text:
        text = text.strip().splitlines()[-1]
    return text


def internal_error(err: Exception) -> int:
    """A failure fgvc does not know as the user's: one line that says so and where the full
    traceback went (the run's log.txt, written as the run ended, or a file of its own)."""
    from fgvc.logs import save_traceback, saved_traceback

    where = saved_traceback(err) or save_traceback(err)
    head = (f"internal error (a bug in fgvc or a library it uses, not in your input): "
            f"{type(err).__name__}: {user_message(err) or '(no message)'}")
    if where is None:  # nowhere to write it: the console is the only record left
        import traceback

        print(f"{head}; no folder could take the traceback, so here it is:", file=sys.stderr)
        traceback.print_exception(err, file=sys.stderr)
    else:
        print(f"{head}; full traceback in {where} (please include it in a bug report; `-v` "
              "shows it here)", file=sys.stderr)
    return 1


def _load_for_cli(args: argparse.Namespace):
    from pathlib import Path

    from fgvc.datasets import load_dataset
    from fgvc.datasets.inspect import default_root
    from fgvc.recipes.recipe import apply_overrides

    options = apply_overrides({}, args.option)
    root = Path(args.root or default_root(args.name))
    if args.name == "synthetic":  # read what is there; never generate it from here
        from fgvc.datasets.registry import get
        from fgvc.datasets.synthetic import stored_options

        problems = get(args.name).option_problems(options)
        if problems:
            raise DatasetError("; ".join(problems))

        options = {**stored_options(root), **options}
    return load_dataset(args.name, root, options, args.integrity,
                        follow_symlinks_outside=args.follow_symlinks_outside)


def cmd_datasets(args: argparse.Namespace) -> int:
    import json

    from fgvc.datasets import inspect

    if args.datasets_command == "list":
        rows = inspect.list_rows()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            splits = ", ".join(f"{k} {v:,}" for k, v in row["splits"].items()) or "as on disk"
            classes = row["classes"] or "-"
            variants = f" (reads: {', '.join(row['variants'])})" if row["variants"] else ""
            print(f"{row['name']:<16} {classes!s:>6} classes  {splits:<40} {row['title']}{variants}")
        return 0
    if args.datasets_command == "card":
        from fgvc.datasets.cards import CARDS, render_card

        if args.name not in CARDS:
            raise UsageError(f"no dataset card {args.name!r}{did_you_mean(args.name, CARDS)}; "
                             "`fgvc datasets list` shows the datasets")
        print(render_card(args.name), end="")
        return 0
    index = _load_for_cli(args)
    if args.datasets_command == "info":
        found = inspect.info(index)
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print(f"{found['name']} at {found['root']}: {found['num_classes']} classes, "
                  f"{found['boxes']} bounding boxes")
            for split, count in found["splits"].items():
                absent = found["missing_files"].get(split)
                print(f"  {split:<9} {count:>8,} images"
                      f"{'' if found['labelled'][split] else ' (unlabelled)'}"
                      f"{f', {absent} missing on disk' if absent else ''}")
        for line in found["empty_splits"]:  # a split of 0 images is a broken copy
            print(f"error: {line}", file=sys.stderr)
        return 1 if found["empty_splits"] else 0
    if args.datasets_command == "export":
        empty = inspect.empty_split_problem(index, args.split)
        if empty is not None:
            print(f"error: {empty}", file=sys.stderr)
            return 1
        if args.out:
            from fgvc.io.atomic import atomic_open

            with atomic_open(args.out, "w", newline="") as f:  # a failed write is one line
                count = inspect.export_split(index, args.split, f)
            print(f"{count} rows written to {args.out}", file=sys.stderr)
        else:
            inspect.export_split(index, args.split, sys.stdout)
        return 0
    from fgvc.datasets.decode import DecodeOptions

    report = inspect.verify(index, DecodeOptions(
        max_image_pixels=args.max_image_pixels,
        follow_symlinks_outside=args.follow_symlinks_outside), strict=args.strict)
    print(inspect.format_verify(index, report), end="")
    return 0 if report.ok else 1


def cmd_recipes(args: argparse.Namespace) -> int:

    from fgvc.recipes.library import shipped_recipe, shipped_recipes

    if args.recipes_command == "list":
        found = shipped_recipes()
        width = max(map(len, found))
        for recipe in found.values():
            print(f"{recipe.name:<{width}}  {recipe.description}")
        return 0
    recipe = shipped_recipe(args.name)
    text = recipe.path.read_text(encoding="utf-8")
    if args.out:  # the copy's editor schema line points beside it, where `fgvc schema --out` puts it
        text = re.sub(r"^(# yaml-language-server: \$schema=)\S+", r"\g<1>fgvc.schema.json", text)
    out = print_or_write(text, args.out, args.force)
    if out:
        print(f"{recipe.name} -> {out} (run it with `fgvc run {out}`)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import json

    from fgvc.models import show

    if args.models_command == "show":
        rows = [show.describe(name) for name in args.names]
        print(json.dumps(rows, indent=2) if args.json
              else "\n".join(show.format_details(r) for r in rows), end="\n" if args.json else "")
        return 0
    rows = show.listing(args.names or None)
    print(json.dumps(rows, indent=2) if args.json else show.format_listing(rows),
          end="\n" if args.json else "")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.inference.exported import is_export_folder

    if args.images:  # before the pipeline's import: serving an ONNX export needs no torch
        return _predict_images(args)
    if is_export_folder(args.run_dir):
        raise UsageError(f"{args.run_dir} is an exported model: it predicts image files, give "
                         "--images FILE|DIR|GLOB")
    from fgvc.inference.submission import check_writable, write_submission
    from fgvc.workflows.pipeline import predict_run

    if args.top_k is not None:
        raise UsageError("--top-k: applies to --images (a split's predictions keep every class; "
                         "--keep-top-k stores fewer)")
    overrides = [f"predict.{key}={value}" for key, value in
                 (("split", args.split), ("crops", args.crops), ("average", args.average),
                  ("resolutions", args.resolutions), ("keep_top_k", args.keep_top_k))
                 if value is not None]
    if args.submission:
        check_writable(Path(args.submission), args.force)
    out, preds = predict_run(Path(args.run_dir), overrides, Path(args.out) if args.out else None,
                             force=args.force)
    print(f"{len(preds.ids)} images predicted ({preds.meta['crops']} at "
          f"{preds.meta['resolutions']} px) -> {out}")
    if args.submission:
        write_submission(preds, Path(args.submission), args.format, force=args.force)
        print(f"submission ({args.format}) -> {args.submission}")
    return 0


def _predict_images(args: argparse.Namespace) -> int:
    from fgvc.workflows.predict_images import DEFAULT_TOP_K, describe, predict_image_files

    given = [flag for flag, value in (("--split", args.split), ("--keep-top-k", args.keep_top_k),
                                      ("--submission", args.submission)) if value is not None]
    if given:
        raise UsageError(f"--images: cannot be combined with {', '.join(given)} (those are for "
                         "a split's predictions)")
    result = predict_image_files(args.run_dir, args.images, out=args.out,
                                 top_k=args.top_k or DEFAULT_TOP_K, force=args.force,
                                 resolutions=args.resolutions, crops=args.crops,
                                 average=args.average)
    if args.top_k and result.top_k < result.asked_top_k:
        print(f"note: --top-k {result.asked_top_k}: the run has {result.num_classes} classes; "
              f"each row lists all {result.top_k}", file=sys.stderr)
    print(describe(result), file=sys.stderr if result.out == "-" else sys.stdout)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.inference.ensemble import combine, load_members
    from fgvc.inference.submission import check_writable, write_submission

    out = Path(args.out)
    check_writable(out, args.force)
    if args.submission:
        check_writable(Path(args.submission), args.force)
    preds = combine(load_members(args.predictions), args.weights, args.combine, out=out)
    print(f"{len(args.predictions)} prediction file(s) combined over {len(preds.ids)} images -> {out}")
    if args.submission:
        write_submission(preds, Path(args.submission), args.format, force=args.force)
        print(f"submission ({args.format}) -> {args.submission}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.inference.submission import submit

    submit(Path(args.file), args.competition, args.message)
    print(f"submitted {args.file} to {args.competition}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.recipes.recipe import Recipe
    from fgvc.workflows.sweep import format_result, run_protocol

    recipe = load_recipe(args.recipe, args.overrides)
    if not isinstance(recipe, Recipe):
        raise UsageError(f"{args.recipe}: fgvc sweep takes a run recipe, not an ensemble")
    if not recipe.sweep_resolutions:
        raise UsageError(f"{args.recipe}: sweep_resolutions is not set, so there is nothing to "
                         "sweep: list candidate test resolutions, e.g. --set "
                         "'sweep_resolutions=[448, 512, 576]' (`fgvc run` adapts at the recipe's "
                         "adapt resolution without a sweep)")
    chosen_on = recipe.dataset.val_split  # run_protocol chooses K_test on this split
    if chosen_on == recipe.evaluate.split:
        logging.getLogger("fgvc.sweep").warning(
            "K_test is chosen on split %r and the result is reported on the same split, so the "
            "reported accuracy is optimistic: set evaluate.split to another labelled split (or "
            "dataset.holdout > 0 with dataset.val_split: holdout)", chosen_on)
    out = Path(args.out) if args.out else Path(recipe.output_root) / f"{recipe.name}-sweep"
    from fgvc.engine.distributed import current

    if args.executor:
        from fgvc.workflows.sweep import run_protocol_as_job

        result = run_protocol_as_job(recipe, out, args.final, job_resources(args))
    else:
        result = run_protocol(recipe, out, final=args.final)
    text = format_result(recipe, result)
    if current().is_main:
        (out / "result.md").write_text(text)
        print(text, end="")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from fgvc.datasets.inspect import default_root
    from fgvc.recipes.recipe import apply_overrides
    from fgvc.workflows.init_recipe import init_recipe

    result = init_recipe(args.dataset, args.root or str(default_root(args.dataset)), args.out,
                         args.arch, args.force, apply_overrides({}, args.option), args.resolution)
    print(f"wrote {result.summary}")
    print("next:\n" + "\n".join(f"  {command}" for command in result.next_commands))
    return 0


def cmd_resolution(args: argparse.Namespace) -> int:
    from fgvc.analysis.resolution import matching_test_resolution, object_size_ratio

    scale = tuple(args.crop_scale)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise UsageError(f"--crop-scale {scale[0]:g} {scale[1]:g}: expected 0 < MIN <= MAX <= 1")
    if not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct {args.crop_pct:g}: expected a ratio in (0, 1]")
    best = matching_test_resolution(args.train, args.crop_pct, scale, args.multiple)
    print(f"train {args.train} px, crops of {scale[0]:g}-{scale[1]:g} of the image area, test "
          f"crop ratio {args.crop_pct:g}: objects look as large as in training at about {best} px")
    print("\n| test px | E[r_test / r_train] |\n|---|---|")
    for k in sorted({args.train, best, *range(args.train, 2 * args.train + 1, args.multiple)}):
        print(f"| {k} | {object_size_ratio(args.train, k, args.crop_pct, scale):.2f} |")
    return 0


def cmd_table3(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fgvc.workflows.table3 import PAPER, run_table

    roots = {}
    for item in args.root:
        name, sep, path = item.partition("=")
        if not sep or name not in PAPER:
            raise UsageError(f"--root {item!r}: expected DATASET=PATH with DATASET one of "
                             f"{', '.join(PAPER)}")
        roots[name] = Path(path)
    from fgvc.engine.distributed import current

    out = Path(args.out)
    results = run_table(args.datasets or list(PAPER), out, roots, args.smoke, args.overrides,
                        final=args.final,
                        resources=job_resources(args) if args.executor else None)
    if not current().is_main:
        return 0
    print((out / "table3.md").read_text())
    skipped = [r for r in results if r.status != "done"]
    for r in skipped:
        print(f"{r.dataset}: {r.status}")
    return 1 if any(r.status.startswith("failed") for r in results) else 0


def cmd_launch(args: argparse.Namespace) -> int:
    from fgvc.workflows.launch import launch, logs_folder, sbatch_script, wait_for

    recipe = load_recipe(args.recipe, args.overrides)
    resources = job_resources(args)
    if args.dry_run:
        print(sbatch_script(resources, recipe.name, logs_folder(recipe)), end="")
        return 0
    launched = launch(recipe, resources, resume=args.resume)
    print(f"submitted job {launched.job_id} ({args.executor})\n  run folder {launched.run_dir}"
          f"\n  stdout     {launched.stdout}\n  stderr     {launched.stderr}", flush=True)
    if args.wait or args.executor == "local":
        wait_for(launched)
        print(f"job {launched.job_id} finished: {launched.run_dir}")
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fgvc.workflows.activations import record_run

    if args.max_images <= 0:
        raise UsageError(f"--max-images: must be >= 1, got {args.max_images}")
    out = record_run(Path(args.run_dir), args.resolutions, args.split, args.max_images)
    data = json.loads(out.read_text())
    print(f"pooled activations of split {data['split']!r} -> {out} and "
          f"{out.with_name(out.stem + '_cdf.png')}")
    for phase in ("before_adaptation", "after_adaptation"):
        for res, s in sorted(data.get(phase, {}).items(), key=lambda kv: int(kv[0])):
            print(f"{phase:<18} {res:>5} px: zeros {100 * s['zeros']:5.1f}%  > 2 "
                  f"{100 * s['above_2']:5.1f}%  mean {s['mean']:.3f}  median "
                  f"{s['percentiles']['50']:.3f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fgvc.api import export
    from fgvc.workflows.export import describe

    result = export(args.run_dir, args.export_format, resolution=args.resolution, out=args.out,
                    force=args.force, tolerance=args.tolerance, push=args.push)
    print("\n".join(describe(result)))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from fgvc.recipes.fields import schema_text

    out = print_or_write(schema_text(), args.out, args.force)
    if out:
        print(f"recipe JSON Schema -> {out} (first line of a recipe: "
              f"# yaml-language-server: $schema={out.name})")
    return 0


def print_or_write(text: str, out: str | None, force: bool):
    """``text`` on stdout, or into ``out`` atomically (refused if it exists, unless ``force``);
    the path written, or None."""
    if not out:
        print(text, end="")
        return None
    from pathlib import Path

    from fgvc.io.atomic import atomic_write

    path = Path(out)
    if path.exists() and not force:
        raise UsageError(f"--out {path}: already exists (--force overwrites it)")
    atomic_write(path, text)  # a failed write is one line naming the file
    return path


COMMANDS = {
    "run": cmd_run, "validate": cmd_validate, "predict": cmd_predict, "ensemble": cmd_ensemble,
    "submit": cmd_submit, "datasets": cmd_datasets, "models": cmd_models, "resume": cmd_resume,
    "report": cmd_report,
    "sweep": cmd_sweep, "resolution": cmd_resolution, "table3": cmd_table3,
    "activations": cmd_activations, "recipes": cmd_recipes, "init": cmd_init,
    "schema": cmd_schema, "export": cmd_export, "launch": cmd_launch,
}


def _setup_logging(verbose: bool) -> None:
    """The console's logging, the same as ``fgvc.run()`` gives a caller without any
    (fgvc/logs.py; a run adds its log.txt there)."""
    from fgvc.logs import setup_console

    setup_console(verbose)


def _quiet_broken_pipe() -> int:
    """``fgvc ... | head`` closed the pipe: stop quietly, as a shell tool does. Standard output
    is pointed at /dev/null so that the interpreter's final flush raises nothing either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what the shell reports for a command killed by a closed pipe


def _lost_processes(err: Exception) -> Exception | None:
    """Under torchrun, a failure caused by a lost process, as one line naming its rank."""
    if "torch" not in sys.modules:
        return None
    from fgvc.engine.distributed import explain_collective_failure

    return explain_collective_failure(err)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fgvc ... | head`: main() stops quietly, as a shell tool does
        raise
    except KeyboardInterrupt:
        print("interrupted: `fgvc run --resume` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    except Preempted as stop:
        print(stop, file=sys.stderr)
        return stop.exit_status
    except Exception as err:
        if args.verbose:
            raise
        lost = _lost_processes(err)
        if lost is not None:
            print(f"error: {lost}", file=sys.stderr)
            return 2
        return internal_error(err)
    finally:
        if "torch" in sys.modules:  # a process group exists only where torch was loaded
            from fgvc.engine.distributed import shutdown

            shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
