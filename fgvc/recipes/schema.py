"""Turn plain YAML data into typed dataclasses, collecting every error with its field path.

One small mechanism serves every recipe section: each dataclass field's type hint says what is
accepted, unknown keys and missing required fields are reported, and a section may add its own
semantic checks through a ``check()`` method that returns ``(field, message)`` pairs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import unicodedata
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from fgvc.errors import FgvcError
from fgvc.recipes.limits import MAX_DEPTH, Bounds, bounds_for
from fgvc.suggest import did_you_mean


class SchemaError(FgvcError, ValueError):
    """Raised with every problem found, one ``path: message`` per line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        head = f"invalid recipe {source}" if source else "invalid recipe"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


def describe(value: Any) -> str:
    """Show a bad value the way the user wrote it."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    if origin is list:
        (item,) = get_args(hint)
        return f"a list of {_type_name(item)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _convert(value: Any, hint: Any, path: str, problems: list[str], checks: list[str]) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        check_plain(value, path, problems)
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:  # Optional[X]: X's own problems are the useful ones
            return _convert(value, arms[0], path, problems, checks)
        for arg in arms:
            trial: list[str] = []
            converted = _convert(value, arg, path, trial, checks)
            if not trial:
                return converted
        problems.append(f"{path}: expected {_type_name(hint)}, got {describe(value)}")
        return None
    if origin is Literal:
        if value not in get_args(hint):
            hint_text = did_you_mean(value, get_args(hint)) if isinstance(value, str) else ""
            problems.append(f"{path}: expected {_type_name(hint)}, got {describe(value)}"
                            f"{hint_text}")
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: expected {_type_name(hint)}, got {describe(value)}")
            return []
        (item,) = get_args(hint)
        return [_convert(v, item, f"{path}[{i}]", problems, checks) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {describe(value)}")
            return {}
        check_plain(value, path, problems)
        args = get_args(hint)
        if len(args) == 2 and args[1] is not Any:
            return {k: _convert(v, args[1], f"{path}.{k}", problems, checks)
                    for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path, problems, checks)
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {describe(value)}")
        else:
            _check_range(value, path, problems)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {describe(value)}")
            return value
        if not math.isfinite(value):
            problems.append(f"{path}: must be a finite number, got {value!r}")
            return value
        _check_range(value, path, problems)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {describe(value)}")
        else:
            _check_text(value, path, problems)
        return value
    raise TypeError(f"schema has an unsupported type hint {hint!r} at {path}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Evaluating string annotations is most of a recipe's validation time: once per class."""
    return get_type_hints(cls)


def build(cls: type, data: Any, path: str, problems: list[str], checks: list[str]) -> Any:
    """Build dataclass ``cls`` from ``data``, appending problems instead of raising.

    Structural problems (unknown, missing or ill-typed fields) go to ``problems``; the
    sections' own ``check()`` findings go to ``checks``, so that a parent's checks still run
    when only a child's values are out of range.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path or '<top>'}: expected a mapping, got {describe(data)}")
        data = {}
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{prefix}{key}: unknown field{did_you_mean(key, fields)} "
                            f"(known fields: {known})")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if name not in data:
            if required:
                problems.append(f"{prefix}{name}: required field is missing")
            continue
        before = len(problems)
        _bounds.append(bounds_for(cls, name))
        try:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", problems, checks)
        finally:
            _bounds.pop()
        if len(problems) > before:
            kwargs.pop(name)
    try:
        obj = cls(**kwargs)
    except TypeError:
        # A required field was missing or ill-typed: already reported above.
        return None
    check = getattr(obj, "check", None)
    if check is not None:
        for field_name, message in check():
            checks.append(f"{prefix}{field_name}: {message}")
    return obj


def check_value(value: Any, hint: Any, path: str) -> list[str]:
    """The problems of one value against a type hint (``path: message`` each), as in a recipe."""
    problems: list[str] = []
    _convert(value, hint, path, problems, [])
    return problems


# The bounds of the field being converted (a stack: sections nest), read by _check_range.
_bounds: list[Bounds | None] = []
DEFAULT_INT_LIMIT = 2**31 - 1


def _check_range(value: float, path: str, problems: list[str]) -> None:
    """Per-field bounds (``limits.BOUNDS``); any other integer within +-(2^31 - 1)."""
    bounds = _bounds[-1] if _bounds else None
    if bounds is None:
        if isinstance(value, int) and abs(value) > DEFAULT_INT_LIMIT:
            problems.append(f"{path}: must be between {-DEFAULT_INT_LIMIT:,} and "
                            f"{DEFAULT_INT_LIMIT:,}, got {value!r}")
        return
    low, high, unit = bounds
    if value > high:
        problems.append(f"{path}: must be at most {_number(high)}{unit}, got {value!r}")
    elif low is not None and value < low:
        problems.append(f"{path}: must be at least {_number(low)}{unit}, got {value!r}")


def _number(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() else f"{value:,g}"


def _check_text(text: str, path: str, problems: list[str]) -> None:
    bad = [c for c in text if unicodedata.category(c) == "Cc"]
    if bad:
        problems.append(f"{path}: must not contain control characters ({', '.join(map(repr, bad[:3]))}), "
                        f"got {text!r}")


def check_plain(value: Any, path: str, problems: list[str]) -> None:
    """Free-form data (adapter options): finite numbers, integers within +-(2^63 - 1) and
    text without control characters, at any depth (shared YAML aliases visited once)."""
    seen: set[int] = set()
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, f"{where}.{key}", problems)
                stack.append((item, f"{where}.{key}" if isinstance(node, dict) else f"{where}[{key}]"))
        elif isinstance(node, float) and not math.isfinite(node):
            problems.append(f"{where}: must be a finite number, got {node!r}")
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 2**63:
            problems.append(f"{where}: integer out of range, got {node!r}")
        elif isinstance(node, str):
            _check_text(node, where, problems)


def nesting_depth(data: Any) -> int:
    """How deeply lists and mappings nest (iterative: any depth is measured, none recursed)."""
    deepest, stack, seen = 0, [(data, 1)], set()
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in seen:
            continue
        seen.add(id(node))
        deepest = max(deepest, depth)
        stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def read_yaml(text: str, source: str | None = None) -> Any:
    """YAML text to plain data; invalid or absurdly deep YAML is a SchemaError that says so."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SchemaError([f"YAML nested too deeply to read (a recipe nests at most "
                           f"{MAX_DEPTH} levels)"], source) from None
    except yaml.YAMLError as err:
        raise SchemaError([f"not valid YAML: {err}"], source) from None
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise SchemaError([f"YAML nested {depth} levels deep; a recipe nests at most "
                           f"{MAX_DEPTH} levels"], source)
    return data


def to_plain(obj: Any) -> Any:
    """Dataclasses back to plain dicts/lists, for saving the resolved recipe."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


__all__ = ["SchemaError", "build", "check_plain", "check_value", "describe", "nesting_depth", "read_yaml",
           "to_plain"]
