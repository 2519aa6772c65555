"""Property-based tests (hypothesis): hostile recipes and hostile metadata either load correctly
or fail with fgvc's own error type, never with another exception.

Budgets: 1,000 mutated recipes, 200 mutated --set lists and 240 mutated metadata trees across
the dataset adapters; examples are derandomised (the same ones every run, so a failure in CI
reproduces locally) and have no per-example deadline, the example counts bound the time.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fgvc.datasets import load_dataset  # noqa: E402
from fgvc.datasets.base import DatasetError, DatasetIndex  # noqa: E402
from fgvc.recipes.recipe import EnsembleRecipe, Recipe, apply_overrides, parse_recipe  # noqa: E402
from fgvc.recipes.schema import SchemaError, read_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUDGET = dict(deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])

BASES = [yaml.safe_load((REPO / "recipes" / name).read_text())
         for name in ("quickstart.yaml", "inat2019_ensemble.yaml", "table3/cub200.yaml")]

HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, 1, -1, 8192, 8193, 65536, 65537, 2**31, 2**63, -2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["train", "adapt", "all", "classifier", "resnet18", "synthetic", "sgd",
                     "cosine", "evil\n", "a\x00b", "../../etc", "", "test", "val"]),
    st.lists(st.one_of(st.integers(-10, 10_000), st.floats(), st.text(max_size=4)), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(-5, 5), max_size=3),
)


def _containers(node, path=()):
    """Every (path, container) of the tree, so a mutation can land anywhere."""
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, (dict, list)):
            yield from _containers(value, path + (key,))


@st.composite
def mutated_recipes(draw):
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        places = list(_containers(data))
        _, node = places[draw(st.integers(0, len(places) - 1))]
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "nest"]))
        if action == "add" and isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(HOSTILE)
        elif not keys:
            continue
        else:
            key = keys[draw(st.integers(0, len(keys) - 1))]
            if action == "delete":
                del node[key]
            elif action == "nest":
                value = node[key]
                for _ in range(draw(st.integers(1, 100))):
                    value = [value]
                node[key] = value
            else:
                node[key] = draw(HOSTILE)
    return data


def _loads_or_schema_error(data, source="fuzz"):
    try:
        recipe = parse_recipe(data, source)
    except SchemaError as err:
        assert str(err).startswith(f"invalid recipe {source}")
        return None
    assert isinstance(recipe, (Recipe, EnsembleRecipe))
    # Loaded correctly: what it saves reads back to the same recipe.
    assert parse_recipe(recipe.to_dict()) == recipe
    return recipe


@settings(max_examples=1000, **BUDGET)
@given(mutated_recipes())
def test_mutated_recipes_load_or_fail_with_schema_error(data):
    recipe = _loads_or_schema_error(data)
    if isinstance(recipe, Recipe):
        for stage in recipe.stages:
            assert 0 < stage.resolution <= 8192 and 0 < stage.batch_size <= 65536
            assert math.isfinite(stage.optimizer.lr) and stage.optimizer.lr > 0


@settings(max_examples=200, **BUDGET)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_mutated_overrides_load_or_fail_with_schema_error(overrides):
    try:
        data = apply_overrides(BASES[0], overrides, "fuzz")
    except SchemaError:
        return
    _loads_or_schema_error(data)


@settings(max_examples=12, **BUDGET)
@given(st.sampled_from(["[", "{a: ", "- "]), st.integers(min_value=70, max_value=1500))
def test_deep_yaml_says_so(opener, depth):
    text = opener * depth
    with pytest.raises(SchemaError, match="nested|not valid YAML"):
        parse_recipe(read_yaml(text, "deep.yaml"), "deep.yaml")


# --- metadata trees -------------------------------------------------------------------------

METADATA_SUFFIXES = {".json", ".txt", ".csv", ".mat", ".tsv", ".xml"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One small tree per adapter, in its official layout, with its metadata files (every
    adapter that reads metadata files: herbarium2019 reads only folders of images)."""
    from fgvc.datasets.layouts import WRITERS

    out = {}
    for name, write in WRITERS.items():
        root = tmp_path_factory.mktemp(name)
        write(root)
        load_dataset(name, root, {})  # the untouched tree loads
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in METADATA_SUFFIXES)
        if files:
            out[name] = (root, files)
    assert len(out) >= 10
    return out


MUTATIONS = ["truncate", "drop_line", "duplicate_line", "replace_line", "insert_bytes", "empty",
             "delete", "swap_fields"]


def _mutate(raw: bytes, action: str, draw) -> bytes | None:
    lines = raw.split(b"\n")
    if action == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if action == "empty":
        return b""
    if action == "delete":
        return None
    if action == "insert_bytes":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at:]
    i = draw(st.integers(0, len(lines) - 1))
    if action == "drop_line":
        del lines[i]
    elif action == "duplicate_line":
        lines.insert(i, lines[i])
    elif action == "swap_fields":
        parts = lines[i].split(b" ")
        lines[i] = b" ".join(reversed(parts))
    else:
        lines[i] = draw(st.text(max_size=30)).encode("utf-8", "surrogatepass")
    return b"\n".join(lines)


@settings(max_examples=240, **BUDGET)
@given(data=st.data())
def test_mutated_metadata_loads_or_fails_with_dataset_error(trees, data):
    name = data.draw(st.sampled_from(sorted(trees)), label="adapter")
    root, files = trees[name]
    target = data.draw(st.sampled_from(files), label="file")
    original = target.read_bytes()
    # Random bytes inside a MATLAB file can crash scipy.io.loadmat's C reader (a segfault in
    # scipy, not an exception fgvc could catch); .mat files get every other mutation.
    allowed = [m for m in MUTATIONS if not (target.suffix == ".mat" and m == "insert_bytes")]
    action = data.draw(st.sampled_from(allowed), label="mutation")
    mutated = _mutate(original, action, data.draw)
    try:
        if mutated is None:
            target.unlink()
        else:
            target.write_bytes(mutated)
        try:
            index = load_dataset(name, root, {})
        except DatasetError as err:
            assert str(err).strip(), "an empty message"
            return
        assert isinstance(index, DatasetIndex)
        for split, samples in index.splits.items():
            for sample in samples:
                assert index.is_labelled(split) is False or 0 <= sample.label < index.num_classes
    finally:
        target.write_bytes(original)


def test_the_fuzzed_trees_are_restored(trees, tmp_path):
    for name, (root, _) in trees.items():
        copy_root = tmp_path / name
        shutil.copytree(root, copy_root)
        assert load_dataset(name, copy_root, {}).num_classes > 0
