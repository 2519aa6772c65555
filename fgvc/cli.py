"""The ``fgvc`` command line. Every known failure is one clear line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys

from fgvc.datasets.base import DatasetError
from fgvc.models.groups import GroupError
from fgvc.models.weights import WeightsError
from fgvc.recipe import Recipe, load_recipe
from fgvc.schema import SchemaError
from fgvc.submission import SubmissionError

USER_ERRORS = (SchemaError, DatasetError, GroupError, WeightsError, SubmissionError,
               FileNotFoundError, ValueError, RuntimeError)


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a recipe YAML, e.g. recipes/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set stages.train.epochs=3 "
                             "(repeatable; lists by index or stage name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe: train, adapt, evaluate, predict, submit")
    _add_recipe_args(run)
    group = run.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the latest run of this recipe where it stopped")
    group.add_argument("--force", action="store_true",
                       help="replace runs/<name> and an existing submission CSV")

    validate = sub.add_parser("validate", help="check a recipe and print its plan; runs nothing")
    _add_recipe_args(validate)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from fgvc.pipeline import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    run_dir = run_recipe(recipe, resume=args.resume, force=args.force)
    print(f"done: {run_dir / 'report.md'}")
    print((run_dir / "report.md").read_text())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from fgvc.plan import describe_plan

    recipe: Recipe = load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: valid")
    print(describe_plan(recipe))
    return 0


def user_message(err: BaseException) -> str:
    """The error's own words; an error re-raised from a DataLoader worker carries the worker's
    traceback in its message, of which only the last line is for the user."""
    text = str(err)
    if "Traceback" in text:
        text = text.strip().splitlines()[-1]
    return text


COMMANDS = {"run": cmd_run, "validate": cmd_validate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: `fgvc run --resume` continues from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
