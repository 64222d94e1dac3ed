"""The import graph of latentdd/ and pipelines/ (installed as latentdd.pipelines): no cycle, and the layers.

For the cycle, only MODULE-LEVEL imports count (statements at the top of a module, including inside
top-level `if`/`try` blocks, but not `if TYPE_CHECKING:`): they run when the module is imported, so a
cycle among them is what breaks or half-initialises a module. Imports inside functions run later and are
the sanctioned way to defer heavy optional dependencies, so they are not edges there.
For the layers (`LAYERS`), every import counts, wherever it is: a deferred import is a dependency too.
`from pkg import name` counts as an import of `pkg.name` when that is a module, else of `pkg`.
The parent packages Python runs first (a/__init__ before a.b) are not edges: only the module
a statement names is, so `a/__init__` importing `a.b` which imports `from a import x` is a cycle,
while `a.b` importing `a.c` is not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"latentdd": "latentdd", "pipelines": "latentdd.pipelines"}  # folder -> installed package


def module_files() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = package.split(".") + list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _top_level_imports(tree: ast.Module):
    """Import statements that run at import time: the module body, into if/try/with blocks (not the body of
    `if TYPE_CHECKING:`, which never runs), not into defs."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, field, []) or [])
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)


def _every_import(tree: ast.Module):
    """Every import statement of the module, wherever it is (in functions and `if TYPE_CHECKING:` too)."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """module -> the modules it imports at import time; with `deferred`, those it imports anywhere."""
    modules = module_files()
    statements = _every_import if deferred else _top_level_imports

    def resolve(name: str) -> set[str]:
        return {name} & modules.keys()

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in statements(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges |= resolve(alias.name)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & modules.keys()
            edges |= submodules if len(submodules) == len(node.names) else submodules | resolve(base)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


# (importer, imported): no module in or under the first imports one in or under the second. The distillers and
# the evaluator share their networks through latentdd.nn alone; nn is below every stage.
LAYERS = (
    ("latentdd.distill", "latentdd.evaluate"),
    ("latentdd.evaluate", "latentdd.distill"),
    ("latentdd.evaluate", "latentdd.render"),
    ("latentdd.evaluate", "latentdd.vae"),
    ("latentdd.prior", "latentdd.vae.fit"),
    *(("latentdd.nn", above) for above in ("latentdd.distill", "latentdd.evaluate", "latentdd.render", "latentdd.vae",
                                           "latentdd.pipelines")),
)


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """The edges "a -> b" of `graph` that a rule (importer, imported) of `layers` forbids."""

    def under(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if any(under(a, importer) and under(b, imported) for importer, imported in layers))


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_the_render_modules():
    graph = import_graph()
    assert "latentdd.render.img2img" in graph["latentdd.render.diffusion"]
    assert "latentdd.render.vae" in graph["latentdd.render.img2img"]
    assert {"latentdd.render.dit", "latentdd.render.sd_img2img"} <= graph["latentdd.render"]
    assert "latentdd.render" in graph["latentdd.pipelines.distill"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layer_violations_lists_the_offending_edges():
    graph = {"latentdd.nn.dsa": {"latentdd.evaluate.trainer", "latentdd.errors"}, "latentdd.nnx": {"latentdd.vae"},
             "latentdd.prior.fit": {"latentdd.vae.base"}, "latentdd.evaluate": {"latentdd.nn.dsa"}}
    assert layer_violations(graph) == ["latentdd.nn.dsa -> latentdd.evaluate.trainer"]
    assert layer_violations({"latentdd.prior.fit": {"latentdd.vae.fit"}}) == ["latentdd.prior.fit -> latentdd.vae.fit"]


def test_deferred_imports_are_edges_of_the_full_graph_only():
    assert "latentdd.api" not in import_graph()["latentdd"]  # latentdd/__init__ imports it inside a function
    assert "latentdd.api" in import_graph(deferred=True)["latentdd"]


def test_the_stages_depend_on_each_other_only_through_the_layers():
    """distill and evaluate share their networks through latentdd.nn; evaluate needs neither render nor vae; prior
    does not reach into the VAE's fit; nn depends on no stage."""
    bad = layer_violations(import_graph(deferred=True))
    assert not bad, "imports across the layers (see LAYERS):\n  " + "\n  ".join(bad)


def test_pyproject_installs_every_package_under_latentdd_only():
    """`pip install` adds the one top-level package `latentdd`; pipelines/ is latentdd.pipelines (package-dir),
    and the explicit package list names every folder with an __init__.py, so none is left out of a wheel."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"latentdd.pipelines": "pipelines"}
    folders = {".".join(PACKAGES[p.parts[0]].split(".") + list(p.parts[1:]))
               for p in (init.parent.relative_to(ROOT) for folder in PACKAGES for init in (ROOT / folder).rglob("__init__.py"))}
    assert set(setuptools["packages"]) == folders
    assert {name.split(".")[0] for name in setuptools["packages"]} == {"latentdd"}
