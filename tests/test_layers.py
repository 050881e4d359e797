"""The package's layers: every import points down (or within a layer), and no modules import each
other in a circle. Imports are read with `ast`, those inside functions included, so that a lazy import
cannot hide an upward dependency."""
import ast
import importlib.util
import os
import subprocess
import sys

import pytest

# Lowest first. A module may import its own layer's modules and lower layers' only.
LAYERS = [
    ("core", ["mtmoe", "mtmoe.core"]),                      # config, task registry, formats: no TensorFlow
    ("model and Transform code", ["mtmoe.trainer"]),
    ("TFX components", ["mtmoe.components"]),
    ("serving tools", ["mtmoe.serving"]),
    ("pipeline assembly and runners", ["mtmoe.pipeline"]),
    ("command line", ["mtmoe.cli", "mtmoe.cli_reference", "mtmoe.init_config"]),
]


def _package_folder(package: str) -> str:
    return list(importlib.util.find_spec(package).submodule_search_locations)[0]


def project_modules() -> dict:
    """{module name: file} for every module of the installed package, read where setup.py maps it."""
    found = {}
    for package in ("mtmoe", "mtmoe.core", "mtmoe.trainer", "mtmoe.components", "mtmoe.serving",
                    "mtmoe.pipeline"):
        folder = _package_folder(package)
        for current, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if os.path.isfile(os.path.join(current, d, "__init__.py"))
                       and not (package == "mtmoe" and current == folder)]
            for name in files:
                if name.endswith(".py"):
                    relative = os.path.relpath(os.path.join(current, name), folder)[:-3]
                    parts = [p for p in relative.split(os.sep) if p != "__init__"]
                    found[".".join([package] + parts)] = os.path.join(current, name)
    return found


def imports_of(path: str, modules) -> set:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_the_layers_cover_the_package(graph):
    assert {"mtmoe.core.config", "mtmoe.trainer.model", "mtmoe.components.transform",
            "mtmoe.serving.server", "mtmoe.pipeline.pipeline", "mtmoe.cli"} <= set(graph)
    for module in graph:
        layer_of(module)


def test_every_import_points_down(graph):
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
              f"({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(graph.items()) for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_loads_and_checks_a_config_without_tensorflow(tmp_path):
    """The command line rejects a bad config in a fraction of a second: nothing in the core, nor
    loading a config, good or bad, imports TensorFlow."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - name: intent\n    type: bogus\n    label_field: intent\n")
    core = [m for m in project_modules() if layer_of(m) == 0]
    script = (
        "import importlib, sys\n"
        f"for module in {core!r}:\n"
        "    importlib.import_module(module)\n"
        "from mtmoe.core.config import load_config\n"
        "from mtmoe.core.errors import UserError\n"
        "load_config(None)\n"
        "try:\n"
        f"    load_config({str(bad)!r})\n"
        "except UserError as error:\n"
        "    print('rejected:', error)\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "rejected:" in result.stdout and "bogus" in result.stdout
    assert "tensorflow loaded: False False" in result.stdout
