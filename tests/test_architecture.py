"""The layer rules of docs/developer.md, read from the source: who may import whom, no cycles, thin entry scripts,
no option lookups with a fallback default."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_SCRIPTS = ("train_teacher", "train_student", "validation", "convert", "search")
# package -> the project packages it may import (the layer picture, bottom up)
ALLOWED = {
    "helper": set(),
    "models": {"helper"},
    "dataset": {"helper"},
    "crd": {"helper", "models"},
    "distiller_zoo": {"helper", "models", "crd"},
    "engine": {"helper", "models", "dataset", "crd", "distiller_zoo"},
    "assembly": {"helper", "models", "dataset", "crd", "distiller_zoo", "engine"},
    "experiments": {"helper", "models", "dataset", "crd", "distiller_zoo", "engine", "assembly"},
}
PACKAGES = set(ALLOWED)


def source_modules():
    """{module name: path} of the project's non-test Python files."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        top = rel.split(os.sep)[0]
        if rel != "." and (top.startswith(".") or top in ("tests", "save", "data") or "__pycache__" in rel):
            dirnames[:] = []
            continue
        for name in filenames:
            if name.endswith(".py") and name != "conftest.py":
                path = os.path.join(dirpath, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return out


def imports_of(module, path, modules):
    """Project modules ``module`` imports anywhere in its file (function-level imports included)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        # ``from . import sub`` names the package and its module: the edge is to the module
        if isinstance(node, ast.ImportFrom) and len(names) > 1 and names[0] == package and not node.module:
            names = names[1:]
        found.update(n for n in names if n in modules and n != module)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = source_modules()
    assert {"train_student", "helper.util", "engine.fit", "assembly.options", "experiments.cells"} <= set(modules)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_each_package_imports_only_the_layers_below_it(graph):
    wrong = []
    for module, targets in graph.items():
        top = module.split(".")[0]
        if top not in ALLOWED:
            continue
        for target in targets:
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_leaf_layer_imports_nothing_else_of_the_project(graph):
    assert {t for m, ts in graph.items() if m.split(".")[0] == "helper" for t in ts
            if t.split(".")[0] != "helper"} == set()


def test_nothing_imports_an_entry_script(graph):
    assert sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if t in ENTRY_SCRIPTS) == []


def test_no_import_cycles(graph):
    # Tarjan's strongly connected components; a package __init__ importing its own modules is no cycle unless a
    # module imports the package back
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_package_level_layers_have_no_cycle(graph):
    edges = {(m.split(".")[0], t.split(".")[0]) for m, ts in graph.items() for t in ts}
    packages = {a for a, b in edges if a != b and a in PACKAGES and b in PACKAGES}
    for a in packages:
        for b in packages:
            assert not ((a, b) in edges and (b, a) in edges and a != b), f"{a} <-> {b}"


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_scripts_are_thin(script):
    lines = open(os.path.join(ROOT, f"{script}.py")).read().splitlines()
    assert len(lines) <= 80, f"{script}.py has {len(lines)} lines; its work belongs in assembly/"


def test_no_option_lookup_with_a_fallback_default():
    # getattr(opt, "name", default) reads a blackboard: every option has one declaration and one resolved value
    pattern = re.compile(r"getattr\(\s*(opt|own|options|args|ctx\.opt|run\.opt|self\.opt)\s*,\s*[^,()]+,")
    hits = []
    for module, path in source_modules().items():
        for number, line in enumerate(open(path), start=1):
            if pattern.search(line):
                hits.append(f"{module}:{number}: {line.strip()}")
    assert hits == []
