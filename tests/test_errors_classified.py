"""Errors are classified, never disguised: an ``FgvcError`` is one line and exit status 2; any
other exception is one line saying it is an internal error and where its full traceback was
saved (the run's log.txt, else the cache folder), exit status 1; a pre-emption signal stays a
pre-emption wherever it lands; ``model.compile`` falls back to eager only for compile failures
and never counts a batch twice in batch-norm statistics."""

from __future__ import annotations

import ast
import copy
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from fgvc.cli import main
from fgvc.errors import FgvcError, UsageError

PACKAGE = Path(__file__).resolve().parents[1] / "fgvc"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Where tracebacks of failures outside a run folder go during the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fgvc" / "errors"


def _break_resolution(monkeypatch, error: BaseException) -> None:
    import fgvc.analysis.resolution as resolution

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(resolution, "matching_test_resolution", broken)


def test_an_internal_error_is_one_line_naming_the_saved_traceback(monkeypatch, cache, capsys):
    _break_resolution(monkeypatch, KeyError("crop_pct"))
    assert main(["resolution", "--train", "224"]) == 1
    err = capsys.readouterr().err
    (saved,) = cache.iterdir()
    assert err == ("internal error (a bug in fgvc or a library it uses, not in your input): "
                   f"KeyError: 'crop_pct'; full traceback in {saved} (please include it in a bug "
                   "report; `-v` shows it here)\n")
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert text.rstrip().endswith("KeyError: 'crop_pct'")


def test_verbose_shows_the_internal_error_itself(monkeypatch, cache):
    _break_resolution(monkeypatch, ZeroDivisionError("division by zero"))
    with pytest.raises(ZeroDivisionError):
        main(["-v", "resolution", "--train", "224"])
    assert not cache.exists()


def test_an_unwritable_cache_falls_back_to_the_temporary_folder(monkeypatch, tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    _break_resolution(monkeypatch, RuntimeError("boom"))
    assert main(["resolution", "--train", "224"]) == 1
    (saved,) = (tmp_path / "tmp" / "fgvc-errors").iterdir()
    assert f"full traceback in {saved}" in capsys.readouterr().err


def test_user_errors_keep_exit_status_2_and_one_line(cache, capsys):
    assert main(["resolution", "--train", "224", "--crop-pct", "1.5"]) == 2
    assert capsys.readouterr().err == "error: --crop-pct 1.5: expected a ratio in (0, 1]\n"
    assert issubclass(UsageError, FgvcError) and issubclass(UsageError, ValueError)
    assert not cache.exists()


def test_an_output_path_that_cannot_be_written_is_a_user_error(tmp_path, cache, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "copy.yaml"  # a folder that is a file
    assert main(["recipes", "show", "quickstart", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {out}: ") and err.count("\n") == 1
    assert not cache.exists()


def _write(tmp_path: Path, recipe: dict) -> str:
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["epochs"] = 1
    recipe["predict"] = recipe["submission"] = None
    recipe["evaluate"]["resolutions"] = [32]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_an_internal_error_in_a_run_goes_to_its_log(tiny_recipe_dict, tmp_path, monkeypatch,
                                                    cache, capsys):
    import fgvc.workflows.pipeline as pipeline

    def broken_stage(ctx, stage):
        raise IndexError("list index out of range")

    monkeypatch.setattr(pipeline, "run_stage", broken_stage)
    assert main(["run", _write(tmp_path, tiny_recipe_dict)]) == 1
    log_txt = tmp_path / "runs" / "tiny" / "log.txt"
    err = capsys.readouterr().err
    assert err.endswith(f"IndexError: list index out of range; full traceback in {log_txt} "
                        "(please include it in a bug report; `-v` shows it here)\n")
    assert err.count("internal error") == 1 and "Traceback" not in err
    text = log_txt.read_text()
    assert "ERROR fgvc: the run failed: IndexError: list index out of range" in text
    assert "Traceback (most recent call last)" in text and "in broken_stage" in text
    assert not cache.exists()


def test_sigterm_while_tracing_the_last_norm_is_a_preemption(tiny_recipe_dict, tmp_path,
                                                             monkeypatch, capsys):
    """The probe catches any failure of a model's forward to report it as a group problem; a
    stop signal arriving there must still stop the run as pre-empted, and the run resumes."""
    import fgvc.models.groups as groups

    real, sent = groups.feeding_norms, []

    def signalled(*args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(groups, "feeding_norms", signalled)
    tiny_recipe_dict["stages"][0]["epochs"] = 1
    tiny_recipe_dict["predict"] = tiny_recipe_dict["submission"] = None
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["run", str(recipe)]) == 128 + signal.SIGTERM
    assert sent, "the signal arrived inside the last-norm probe"
    run_dir = tmp_path / "runs" / "tiny"
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM; `fgvc resume {run_dir}` continues from there" in err
    assert "cannot trace" not in err and "internal error" not in err and "error:" not in err
    assert "WARNING fgvc: the run stopped: Preempted: stopped by SIGTERM" in \
        (run_dir / "log.txt").read_text()
    assert main(["resume", str(run_dir)]) == 0
    assert (run_dir / "summary.json").is_file()


def test_a_stop_during_a_failing_write_stays_a_stop(tmp_path, monkeypatch):
    import fgvc.io.atomic as atomic

    def full_then_interrupted(f, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_chunk", full_then_interrupted)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_open(tmp_path / "x.bin", "wb") as f:
        try:
            f.write(b"abc")
        except OSError:
            raise KeyboardInterrupt from None
    assert list(tmp_path.iterdir()) == []


# --- model.compile's fallback -----------------------------------------------------------------

class ConvBnHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn(self.conv(x))
        torch._dynamo.graph_break()  # the graph before the break runs before the next compiles
        return self.fc(x.mean((2, 3)))


def second_graph_fails(calls: list):
    """A torch.compile backend that compiles the first graph and fails on the second."""

    def backend(graph_module, example_inputs):
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("fake compiler failure")
        return graph_module.forward

    return backend


def test_a_compile_failure_after_batchnorm_ran_counts_the_batch_once(caplog):
    from fgvc.engine.compile import maybe_compile

    torch.manual_seed(0)
    model, eager = ConvBnHead(), None
    eager = copy.deepcopy(model)
    x = torch.randn(4, 3, 8, 8)
    calls: list = []
    compiled = maybe_compile(model, True, second_graph_fails(calls))
    with caplog.at_level(logging.WARNING):
        out = compiled(x)
    assert len(calls) == 2, "the first graph (conv + BN) compiled and ran before the failure"
    expected = eager(x)
    torch.testing.assert_close(out, expected)
    assert int(model.bn.num_batches_tracked) == 1
    torch.testing.assert_close(model.bn.running_mean, eager.bn.running_mean)
    torch.testing.assert_close(model.bn.running_var, eager.bn.running_var)
    assert "model.compile: torch.compile failed here (BackendCompilerFailed" in caplog.text
    assert compiled.__dict__["compiled"] is None  # eager from now on


class FakeCompiled:
    """Stands for a compiled forward that runs the BN (updating its statistics) and then
    raises ``error``."""

    def __init__(self, model: ConvBnHead, error: BaseException):
        self.model, self.error = model, error

    def __call__(self, x):
        self.model.bn(self.model.conv(x))
        raise self.error


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ValueError("a data error"),
    RuntimeError("Expected all tensors to be on the same device"),
], ids=["out-of-memory", "data", "runtime"])
def test_only_compile_failures_fall_back_to_eager(error):
    from fgvc.engine.compile import CompiledForward

    model = ConvBnHead()
    wrapped = CompiledForward(model, "inductor")
    fake = FakeCompiled(model, error)
    wrapped.__dict__["compiled"] = fake
    with pytest.raises(type(error)) as raised:
        wrapped(torch.randn(2, 3, 8, 8))
    assert raised.value is error
    assert wrapped.__dict__["compiled"] is fake  # compilation stays on


def test_a_models_own_failing_op_under_dynamo_is_not_a_compile_failure():
    from torch._dynamo.exc import TorchRuntimeError

    from fgvc.engine.compile import CompiledForward

    model = ConvBnHead()
    wrapped = CompiledForward(model, "inductor")
    wrapped.__dict__["compiled"] = FakeCompiled(model, TorchRuntimeError("shapes mismatch"))
    with pytest.raises(TorchRuntimeError):
        wrapped(torch.randn(2, 3, 8, 8))


def test_compile_failure_types_resolve_on_this_torch():
    from fgvc.torch_compat import compile_failure_types

    compile_errors, op_errors = compile_failure_types()
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError

    assert issubclass(BackendCompilerFailed, compile_errors) and op_errors == (TorchRuntimeError,)
    assert not issubclass(torch.OutOfMemoryError, compile_errors)


# --- the audit: no user-facing failure is a bare built-in error -------------------------------

BUILTIN_ERRORS = {"ValueError", "RuntimeError", "FileNotFoundError", "OSError", "KeyError",
                  "TypeError", "IndexError"}

# The bare built-in raises that stay, each an internal invariant (a bug when it fires) or a
# failure its caller converts, with the reason. A user-facing failure raises an FgvcError
# subclass instead (fgvc/errors.py), or the command line reports it as an internal error.
INTERNAL = {
    ("fgvc.analysis.activations", "no activation to summarise"): "callers pass recorded features",
    ("fgvc.analysis.frechet", "a Fréchet fit needs"): "pooled features hold thousands of "
                                                     "non-zero values; fewer: a broken model",
    ("fgvc.analysis.gaussian", "moments of "): "maths precondition: one model's channels",
    ("fgvc.analysis.gaussian", "no activation to fit"): "callers pass recorded features",
    ("fgvc.analysis.gaussian", "{test.mean.shape[0]} channels at"): "maths precondition",
    ("fgvc.analysis.resolution", "crop scale must satisfy"): "the CLI checks --crop-scale first",
    ("fgvc.analysis.statistics", "a confidence interval needs"): "maths precondition",
    ("fgvc.analysis.statistics", "successes must be in"): "maths precondition",
    ("fgvc.analysis.statistics", "paired test needs"): "maths precondition",
    ("fgvc.api", "predict: the readable images differ"): "invariant of the batching",
    ("fgvc.datasets.base", "sample columns of different"): "adapters build equal columns",
    ("fgvc.datasets.parquet", "{path}: no image in column"): "one image's read error: the "
                                                             "decoder reports it unreadable",
    ("fgvc.datasets.parquet", "{path}: column {ref.column} row"): "as above",
    ("fgvc.datasets.parquet", "row {ref.row} beyond the file's"): "as above",
    ("fgvc.engine.shared_batches", "reused batch buffers need"): "fgvc's loaders are in order",
    ("fgvc.inference.predictions", "{self.file.name}: {self.rows} rows written"):
        "the writer counts its own rows",
    ("fgvc.inference.tta", "crop {size} is larger than"): "sizes come from the recipe's checks",
    ("fgvc.logs", "open_run_file: no run under way"): "called inside run_recipe only",
    ("fgvc.progress", "Progress without an iterable"): "programming error",
    ("fgvc.recipes.library", "fgvc's shipped recipes are missing"): "a broken installation",
    ("fgvc.recipes.fields", "no JSON Schema for the type hint"): "programming error",
    ("fgvc.recipes.schema", "schema has an unsupported type"): "programming error",
    ("fgvc.tracking", "open_tracker: tracking.tensorboard"): "the run passes the folder",
    ("fgvc.transforms", "TensorColorJitter covers"): "built from the recipe's checked fields",
    ("fgvc.transforms", "unknown augment"): "names come from fgvc's own stages",
    ("fgvc.workflows.init_recipe", "fgvc init chose splits"): "init's own choice is a bug",
}


def _builtin_raises() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id in BUILTIN_ERRORS):
                first = node.exc.args[0] if node.exc.args else None
                text = ""
                if isinstance(first, ast.Constant):
                    text = str(first.value)
                elif isinstance(first, ast.JoinedStr):
                    text = "".join(v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(
                        v.value) + "}" for v in first.values)
                found.add((module, text))
    return found


def test_every_bare_builtin_raise_is_a_listed_internal_invariant():
    found = _builtin_raises()
    unlisted = sorted(f"{module}: raise ...({text[:60]!r})" for module, text in found
                      if not any(module == m and text.startswith(prefix) for m, prefix in INTERNAL))
    assert not unlisted, (
        "raise an FgvcError subclass for a failure the user can fix (fgvc/errors.py: UsageError, "
        "RecipeError, or the module's own), or list an internal invariant in INTERNAL with its "
        "reason:\n  " + "\n  ".join(unlisted))
    stale = sorted(key for key in INTERNAL
                   if not any(m == key[0] and t.startswith(key[1]) for m, t in found))
    assert not stale, f"INTERNAL lists raises that no longer exist: {stale}"
