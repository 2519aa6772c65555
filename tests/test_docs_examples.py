"""The commands and code in README.md and docs/ are run, so a documented example cannot rot.

Conventions (docs/guide/recipes.md and every tutorial follow them):

- A fenced ``bash`` block preceded by ``<!-- smoke -->`` is run, line by line, in one shared
  workspace (a temporary folder): ``fgvc ...`` lines in this process through ``fgvc.cli.main``,
  other lines (``tar``, ``mkdir``) by the shell. Every ``fgvc run`` gets the ``--set`` overrides of
  ``SHRINK`` (a tiny network, 32 -> 48 px, one epoch per stage, tiny data), so a documented
  training run takes seconds. ``<!-- smoke: needs=a,b -->`` first makes the named fixtures
  (``NEEDS``: a CUB-200-2011 tarball in the official layout, a folder of photos).
- Every ``python`` block runs, in document order after the smoke blocks before it, with
  ``fgvc.run`` given the same shrinking overrides.
- Every ``fgvc`` command written anywhere (bash blocks, ``$ fgvc`` lines of text blocks, inline
  code) is checked against the parser ``fgvc`` runs: a renamed or removed command or option
  fails here even when the block is not run.

Identical command lines are run once per session (a later page repeating the demo reuses its
run folder), so each page's blocks also work alone: ``pytest -k getting-started``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def documents() -> list[Path]:
    """README.md, then the site's pages in their navigation order, then any page not in it."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    ordered: list[Path] = []

    def walk(items) -> None:
        for item in items:
            target = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(target, list):
                walk(target)
            elif (DOCS / target).is_file():
                ordered.append(DOCS / target)

    walk(nav)
    rest = [p for p in sorted(DOCS.rglob("*.md")) if p not in ordered]
    return [REPO / "README.md", *ordered, *rest]


DOCUMENTS = documents()


def doc_id(path: Path) -> str:
    return path.relative_to(REPO).with_suffix("").as_posix()


# --- reading the blocks ----------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*smoke(?::\s*(.*?))?\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int
    language: str
    text: str
    smoke: bool = False
    needs: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        marker = MARKER.match(before[-1].strip()) if before else None
        needs: list[str] = []
        if marker and marker.group(1):
            key, _, value = marker.group(1).partition("=")
            assert key.strip() == "needs", f"{path}: unknown smoke marker {marker.group(0)!r}"
            needs = [n.strip() for n in value.split(",") if n.strip()]
        out.append(Block(path, text[: match.start()].count("\n") + 1, match.group(1),
                         match.group(2), smoke=marker is not None, needs=needs))
    return out


def shell_lines(text: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in (raw.strip() for raw in joined.splitlines())
            if line and not line.startswith("#")]


def fgvc_argv(line: str) -> list[str] | None:
    """The arguments of an ``fgvc`` command (``torchrun ... -m fgvc.cli ...`` and environment
    prefixes included), or None when the line runs something else."""
    words = shlex.split(line, comments=True)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    if words[:1] == ["srun"]:
        words = words[1:]
    if words[:1] == ["fgvc"]:
        return words[1:]
    for module in ("fgvc.cli", "fgvc"):
        if words and words[0] in ("torchrun", "python", "python3") and module in words:
            start = words.index(module)
            if words[start - 1] == "-m":
                return words[start + 1:]
    return None


# --- the option check ------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    from fgvc.cli import build_parser

    return build_parser()


def parse_problem(argv: list[str]) -> str | None:
    """The parser's complaint about ``argv``, or None when it parses."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser().parse_args(argv)
    except SystemExit as stop:
        if stop.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else f"exit {stop.code}"
    return None


def subcommand_parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command path (``("datasets", "info")``) with its parser."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(node: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        found[path] = node
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    walk(parser(), ())
    return found


def inline_problem(words: list[str]) -> str | None:
    """An inline ``fgvc ...`` mention may be partial (``fgvc predict --keep-top-k K``): its
    command must exist and each ``--option`` must belong to it."""
    commands = subcommand_parsers()
    path: tuple[str, ...] = ()
    rest = list(words)
    while rest and (*path, rest[0]) in commands:
        path = (*path, rest.pop(0))
    if not path and rest and not rest[0].startswith("-"):
        # COMMAND, NAME...: a placeholder, not a command
        return None if rest[0].isupper() else f"no command {rest[0]!r}"
    known = {s for a in commands[path]._actions for s in a.option_strings}
    for word in rest:
        option = word.split("=", 1)[0]
        if option.startswith("--") and option not in known:
            return f"`fgvc {' '.join(path)}` has no option {option}"
    return None


def documented_commands() -> list[tuple[str, str, list[str], bool]]:
    """(where, line, argv, whole) for every fgvc command in the documentation; ``whole`` for
    commands in shell blocks and ``$`` lines, which must parse as written."""
    out = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for block in blocks(path):
            if block.language in ("bash", "sh", "shell", "console"):
                lines = shell_lines(block.text)
            elif block.language == "text":
                lines = [ln[2:] for ln in block.text.splitlines() if ln.startswith("$ ")]
            else:
                continue
            for line in lines:
                argv = fgvc_argv(line)
                if argv is not None:
                    out.append((block.where, line, argv, True))
        prose = FENCE.sub("", text)
        for span in re.findall(r"`(fgvc [^`]+)`", prose):
            if "..." in span or "|" in span:
                continue
            try:
                words = shlex.split(span)[1:]
            except ValueError:
                continue
            out.append((str(path.relative_to(REPO)), span, words, False))
    return out


COMMANDS_WRITTEN = documented_commands()


def test_the_documentation_is_read():
    """The reader finds what it must: smoke blocks, python blocks, commands in every form."""
    all_blocks = [b for p in DOCUMENTS for b in blocks(p)]
    assert sum(b.smoke for b in all_blocks) >= 10
    assert any(b.language == "python" for b in all_blocks)
    assert any(b.needs == ["cub200-tarball", "photos"] for b in all_blocks)
    lines = {line for _, line, _, _ in COMMANDS_WRITTEN}
    assert "fgvc run quickstart" in lines
    assert any(line.startswith("torchrun") for line in lines)
    assert len(COMMANDS_WRITTEN) > 80


def test_every_documented_command_and_option_exists():
    problems = []
    for where, line, argv, whole in COMMANDS_WRITTEN:
        problem = parse_problem(argv) if whole else inline_problem(argv)
        if problem:
            problems.append(f"{where}: `{line}`: {problem}")
    assert not problems, "documented commands the parser refuses:\n" + "\n".join(problems)


def test_the_option_check_fails_on_a_removed_option():
    """The check is not vacuous: a misspelt option or command is caught both ways."""
    assert parse_problem(["run", "quickstart", "--resme"])
    assert parse_problem(["predict", "runs/x", "--crops", "eleven_crop"])
    assert inline_problem(["predict", "--keep-top-k", "5"]) is None
    assert inline_problem(["predict", "--keep-top"])
    assert inline_problem(["frobnicate"])


# --- running the smoke blocks and python blocks ----------------------------------------------

TINY_DATA = ("dataset.options={num_classes: 4, train_per_class: 6, val_per_class: 3, "
             "test_per_class: 3, min_side: 40, max_side: 64, seed: 3}")
SHRINK = ["model.arch=test_resnet", "model.pretrained=none", "dataset.num_workers=0",
          "stages.train.resolution=32", "stages.train.epochs=1", "stages.train.batch_size=8",
          "stages.train.validate_every=1", "stages.adapt.resolution=48", "stages.adapt.epochs=1",
          "stages.adapt.batch_size=8", "evaluate.resolutions=[32, 48]", "evaluate.batch_size=8"]


def data_for(recipe: str) -> list[str]:
    """The embedded dataset's tiny options, for a recipe that reads it: the workspace holds
    that tiny copy, which `fgvc validate` and `fgvc run` must both accept."""
    from fgvc.recipes.library import resolve_recipe

    data = yaml.safe_load(resolve_recipe(recipe).read_text(encoding="utf-8"))
    return [TINY_DATA] if (data.get("dataset") or {}).get("name") == "synthetic" else []


def shrink_for(recipe: str) -> list[str]:
    """The overrides that make a documented training run take seconds."""
    return SHRINK + data_for(recipe)


def shrunk(argv: list[str]) -> list[str]:
    """``fgvc run`` shrunk; ``fgvc validate`` pointed at the workspace's tiny embedded data."""
    if argv[:1] == ["run"]:
        overrides = shrink_for(argv[1])
    elif argv[:1] == ["validate"]:
        overrides = data_for(argv[1])
    else:
        return argv
    return [*argv, *(arg for override in overrides for arg in ("--set", override))]


def make_cub200_tarball(workspace: Path) -> None:
    from fgvc.datasets.layouts import write_cub200

    target = workspace / "CUB_200_2011.tgz"
    if target.exists():
        return
    staging = workspace / ".cub-staging"
    write_cub200(staging, num_classes=4, per_class=6)
    with tarfile.open(target, "w:gz") as tar:
        tar.add(staging / "CUB_200_2011", arcname="CUB_200_2011")


def make_photos(workspace: Path) -> None:
    from PIL import Image

    folder = workspace / "photos"
    folder.mkdir(exist_ok=True)
    for i, colour in enumerate([(200, 40, 40), (40, 160, 60), (50, 60, 190)]):
        Image.new("RGB", (72, 56), colour).save(folder / f"{i:02d}.jpg")


NEEDS = {"cub200-tarball": make_cub200_tarball, "photos": make_photos}


class Workspace:
    """One folder shared by every page, with the command lines already run in it."""

    def __init__(self, root: Path):
        self.root = root
        self.done: set[str] = set()
        self.namespaces: dict[Path, dict] = {}

    def run_fgvc(self, argv: list[str], where: str, line: str) -> None:
        from fgvc.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(shrunk(argv))
        assert status == 0, (f"{where}: `{line}` exited {status}\nstdout:\n{out.getvalue()[-3000:]}"
                             f"\nstderr:\n{err.getvalue()[-3000:]}")

    def run_block(self, block: Block) -> None:
        for need in block.needs:
            NEEDS[need](self.root)
        for line in shell_lines(block.text):
            if line in self.done:
                continue
            argv = fgvc_argv(line)
            if argv is not None:
                self.run_fgvc(argv, block.where, line)
            else:
                done = subprocess.run(line, shell=True, cwd=self.root, capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0, f"{block.where}: `{line}`: {done.stderr[-2000:]}"
            self.done.add(line)

    def run_python(self, block: Block) -> None:
        namespace = self.namespaces.setdefault(block.path, {"__name__": "__docs__"})
        code = compile(block.text, block.where, "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)  # noqa: S102 - the documentation's own example


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("docs-workspace"))


@pytest.fixture
def shrunk_api(monkeypatch):
    """``fgvc.run`` from a python block gets the same shrinking overrides as ``fgvc run``."""
    import fgvc.api

    original = fgvc.api.run

    def run(recipe_or_path, **overrides):
        extra = {}
        for item in shrink_for(str(recipe_or_path)):
            key, _, value = item.partition("=")
            extra[key] = yaml.safe_load(value)
        return original(recipe_or_path, **{**overrides, **extra})

    monkeypatch.setattr(fgvc.api, "run", run)


RUNNABLE = [p for p in DOCUMENTS if any(b.smoke or b.language == "python" for b in blocks(p))]


@pytest.mark.parametrize("path", RUNNABLE, ids=doc_id)
def test_the_runnable_blocks_of_a_page_run(path, workspace, shrunk_api, monkeypatch):
    monkeypatch.chdir(workspace.root)
    for block in blocks(path):
        if block.smoke:
            workspace.run_block(block)
        elif block.language == "python":
            workspace.run_python(block)


# --- what the README promises about the project itself ----------------------------------------

def test_the_readme_commands_are_the_makefile_and_ci_targets():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    ci = (REPO / ".ci/run").read_text(encoding="utf-8")
    for target in ("demo", "test", "docs", "docs-serve"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"
    assert "make demo" in readme and "make test" in readme and "make docs" in readme
    ci_commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "make test" in ci_commands and "make docs" in ci_commands
    assert re.search(r"^demo:.*\n\t.*fgvc run recipes/quickstart\.yaml", makefile, re.M)


def test_the_readme_links_to_files_that_exist():
    """MkDocs checks the site's links; the README is read on its own, so its links are checked
    here (a generated reference page is not a file: the README names it in words)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [m.group(1) for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
               if not m.group(1).startswith(("http://", "https://"))]
    assert targets, "the README links to no page: is the reader broken?"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail into docs/"


HISTORY = {
    "a commit hash": re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),
    "a date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "a machine-load narrative": re.compile(r"load average", re.I),
}


@pytest.mark.parametrize("path", DOCUMENTS, ids=doc_id)
def test_user_documentation_holds_no_history(path):
    """Commit hashes, dates and narratives of machine load belong in CHANGELOG.md and
    benchmarks/results/; a results file's name may carry its date."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"`?(benchmarks/results/)?[\w.-]*20\d\d-\d\d-\d\d[\w.-]*\.(md|txt)`?", "", text)
    found = [f"{name}: {m.group(0)!r}" for name, rx in HISTORY.items() for m in rx.finditer(text)]
    assert not found, f"{path.relative_to(REPO)}: " + "; ".join(found)
