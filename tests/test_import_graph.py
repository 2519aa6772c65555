"""The fgvc package's imports, read from the source: no import circle but the dataset registry's,
and imports point down the design's layer order (``LAYERS``: cli at the top, errors at the bottom).

Every import of an fgvc module counts: at module level, inside a function (a lazy import that
reaches up is still a tangle, only a slower one) and under ``if TYPE_CHECKING:`` (two modules
naming each other's types are still two modules that need each other). ``from fgvc.x import y``
is an import of ``fgvc.x.y`` where ``y`` is a module, else of ``fgvc.x``; the module names a
package ``__init__`` maps attributes to (``fgvc/models/__init__.py``'s lazy homes) count as its
imports. The root package ``fgvc`` is not counted as an import: every fgvc import runs it first.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fgvc"

# The one circle by design: the registry imports every adapter module so that they register
# themselves (``registry._ensure_loaded``), and each adapter imports the registry for its
# ``@register`` decorator. A new adapter joins this circle; nothing else may.
REGISTRY_CIRCLE_CORE = "fgvc.datasets.registry"
ADAPTERS = {"coco", "folders", "inat_folders", "matlab", "parquet", "synthetic", "textlists"}

# Top to bottom: a module imports its own package or one below it. Names in one tuple share a
# floor. The leaf helpers (logs, progress, tracking, suggest, torch_compat, norms) import
# nothing from fgvc; they sit above io and errors.
LAYERS: list[tuple[str, ...]] = [
    ("fgvc", "__main__"),  # the package's lazy facade (``fgvc.run``...) and ``python -m fgvc``
    ("cli",),
    ("api",),
    ("workflows",),
    ("report",),
    ("analysis",),
    ("engine",),
    ("inference",),
    ("runfolder",),
    ("recipes",),
    ("models",),
    ("transforms",),
    ("datasets",),
    ("logs", "progress", "tracking", "suggest", "torch_compat", "norms"),
    ("io",),
    ("errors",),
]

# Imports that point up, each with why it stays. Keep this list short; an entry is a debt.
UPWARD: dict[tuple[str, str], str] = {
    ("fgvc.recipes.plan", "fgvc.engine.freeze"):
        "`fgvc validate` resolves a stage's trainable groups with the run's own function, so "
        "validate and run cannot disagree (meta-device model, no data)",
    ("fgvc.recipes.plan", "fgvc.engine.optim"):
        "`fgvc validate` checks layer decay with the run's own grouping (lazy)",
    ("fgvc.datasets.registry", "fgvc.recipes.schema"):
        "adapter options are type-checked by the recipe schema's one checker, so a dataset "
        "option and a recipe field fail alike (lazy)",
    ("fgvc.engine.adapt_methods", "fgvc.analysis.frechet"):
        "the Fréchet adapt method fits the paper's model, which is pure maths kept with the "
        "other analysis maths (it imports nothing from fgvc)",
    ("fgvc.engine.adapt_methods", "fgvc.analysis.gaussian"):
        "the gaussian adapt method (appendix A.2) fits per-channel Gaussians and their map, "
        "pure maths kept with the Fréchet model's (it imports nothing from fgvc)",
    ("fgvc.models.weights", "fgvc.engine.checkpoint"):
        "a weights file that torch refuses is explained by the checkpoint format's one "
        "describer (lazy, on the error path only)",
    ("fgvc.workflows.predict_images", "fgvc.api"):
        "`fgvc predict --images` is the Python API's load_run + predict with a CSV around them",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _known(name: str) -> str:
    """The module ``name`` is, or the nearest enclosing fgvc module (``fgvc.a.b.attr``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> dict[str, int]:
    """fgvc modules ``module`` imports, each with the line of its first import."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [_known(a.name) for a in node.names if a.name.split(".")[0] == "fgvc"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            if base.split(".")[0] == "fgvc":
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else _known(base)
                           for a in node.names]
        elif (path.name == "__init__.py" and isinstance(node, ast.Constant)
              and isinstance(node.value, str) and node.value in MODULES):
            targets = [node.value]  # a lazy home: importlib.import_module(...)
        for target in targets:
            # ``from fgvc import __version__``: the root package runs before any fgvc module
            # anyway; its own lazy facade (``fgvc.run`` -> api) is its import, not theirs.
            if target and target not in (module, "fgvc"):
                found.setdefault(target, node.lineno)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def a_cycle(component: list[str]) -> str:
    """One circle through the component, as ``a:line -> b:line -> ... -> a``."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth-first: the shortest way back to ``start``
        node = queue.pop(0)
        for nxt in sorted(GRAPH[node]):
            if nxt == start:
                path = paths[node] + [start]
                steps = zip(path, path[1:], strict=False)
                return " -> ".join(f"{a} (line {GRAPH[a][b]})" for a, b in steps) + f" -> {start}"
            if nxt in members and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"no circle in {component}")


def is_registry_circle(component: list[str]) -> bool:
    adapters = {f"fgvc.datasets.{name}" for name in ADAPTERS}
    if REGISTRY_CIRCLE_CORE not in component or not set(component) <= adapters | {REGISTRY_CIRCLE_CORE}:
        return False
    # By design means: the registry's only way into the circle is the adapters' loading.
    rest = {m: {n: line for n, line in GRAPH[m].items() if n in component and n != REGISTRY_CIRCLE_CORE}
            for m in component if m != REGISTRY_CIRCLE_CORE}
    return not strongly_connected(rest)


def test_the_graph_is_read():
    """The reader finds the imports it must (absolute, relative, lazy, module-as-name)."""
    assert "fgvc.datasets.base" in GRAPH["fgvc.datasets.registry"]
    assert "fgvc.datasets.coco" in GRAPH["fgvc.datasets.registry"]  # inside a function
    assert "fgvc.models.factory" in GRAPH["fgvc.models"]  # a lazy home
    assert "fgvc.datasets.registry" in GRAPH["fgvc.datasets.synthetic"]
    assert len(GRAPH) > 80


def test_no_import_circle_but_the_dataset_registry():
    components = strongly_connected(GRAPH)
    registry = [c for c in components if is_registry_circle(c)]
    assert len(registry) == 1, "the dataset registry's circle was not found: is the reader broken?"
    others = [c for c in components if not is_registry_circle(c)]
    assert not others, "import circles:\n" + "\n".join(f"  {a_cycle(c)}" for c in others)


def layer_of(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else module
    return next((level for level, names in enumerate(LAYERS) if top in names), None)


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"modules with no place in LAYERS (add them where they belong): {unplaced}"


def test_imports_point_down_the_layers():
    upward = [f"{a} (line {line}) imports {b}" for a, edges in sorted(GRAPH.items())
              for b, line in sorted(edges.items())
              if layer_of(b) < layer_of(a) and (a, b) not in UPWARD]
    assert not upward, ("imports pointing up the design's layers (fix them, or add an entry to "
                        "UPWARD with the reason):\n  " + "\n  ".join(upward))


def test_every_documented_exception_is_still_needed():
    stale = [f"{a} -> {b}" for a, b in UPWARD if b not in GRAPH.get(a, {})]
    assert not stale, f"UPWARD lists imports that no longer exist: {stale}"
