"""The package's own import graph, read from the source with ``ast``: the folders say what a
module may touch, and the code keeps to it.

Layers, lowest first: the registry (``tables``); ``core`` (pure); ``adapters`` (warehouses,
services, Slack, the simulated league, the environment); ``instance`` (the Dagster instance);
``defs`` (what Dagster loads); the application (``definitions``, ``runs``, ``cli``, ``report``,
``demo``). A module imports only from its own layer or below, and no two modules import each
other, directly or around a circle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "selfheal_dagster"
LAYERS = {"tables": 0, "core": 1, "adapters": 2, "instance": 3, "defs": 4}
APPLICATION = 5


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], APPLICATION) if len(parts) > 1 else APPLICATION


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, inside a function) for the package's own modules."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                base = child.module
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                    for a in child.names
                ]
            for name in names:
                if name.split(".")[0] == "selfheal_dagster":
                    while name not in MODULES and "." in name:
                        name = name.rsplit(".", 1)[0]
                    found.append((name, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


GRAPH = {m: imports(p) for m, p in MODULES.items()}


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{m}:{line} imports {target}"
        for m, found in GRAPH.items()
        for target, line, _ in found
        if layer(target) > layer(m)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycles():
    edges = {m: {t for t, _, _ in found if t != m} for m, found in GRAPH.items()}
    seen, on_path, cycles = set(), [], []

    def walk(m: str) -> None:
        if m in on_path:
            cycles.append(on_path[on_path.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for t in sorted(edges.get(m, ())):
            walk(t)
        on_path.pop()

    for m in sorted(edges):
        walk(m)
    # A package's __init__ re-exporting its own modules is not a cycle of code.
    real = [c for c in cycles if not any(m == c[0].rsplit(".", 1)[0] for m in c)]
    assert real == [], real


def test_function_local_imports_of_the_package_say_why():
    """A deferred import of our own module is only for import cost (an engine's client) or
    for the code location's own loading, and says so on its line or the one above."""
    silent = []
    for m, found in GRAPH.items():
        lines = MODULES[m].read_text().splitlines()
        for target, line, in_function in found:
            if not in_function:
                continue
            said = " ".join(lines[max(0, line - 2) : line]).lower()
            if "import cost" not in said and "loads" not in said:
                silent.append(f"{m}:{line} imports {target} inside a function")
    assert silent == []


def written(func: ast.expr) -> str | None:
    """The history write a call makes: ``warehouse.insert_history(…)``, ``resolve(…)`` or
    ``heal_loop.resolve(…)`` (not ``Path.resolve()``)."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if func.attr != "resolve":
            return func.attr
        if isinstance(func.value, ast.Name) and func.value.id == "heal_loop":
            return func.attr
    return None


def test_heal_records_are_written_and_resolved_only_by_apply_and_verify():
    """One applier: every call that writes a heal-history record or resolves one sits in
    ``instance/heal_loop.py``'s ``apply``, ``resolve`` (which ``apply`` and ``verify`` call)
    or ``verify``; nothing else (``runs.py``, the CLI, the demo) writes the history."""
    writes = {"insert_history", "insert_histories", "update_history", "resolve"}
    allowed = {("selfheal_dagster.instance.heal_loop", f) for f in ("apply", "resolve", "verify")}
    found = []
    for module, path in MODULES.items():
        if ".adapters.warehouse" in module:  # the warehouses implement the writes
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and (name := written(call.func)) in writes:
                    found.append((module, fn.name, name))
    outside = sorted({f for f in found if (f[0], f[1]) not in allowed})
    assert found and outside == [], outside


TESTS = PACKAGE.parent / "selfheal_dagster_tests"


def test_no_test_module_imports_another_and_the_support_files_have_no_circle():
    """A test module (in a layer folder) imports only support files (fixtures come from
    conftest.py by name); the support files import each other, deferred imports included,
    without a circle."""
    modules = {
        ".".join(path.relative_to(TESTS).with_suffix("").parts): path
        for path in TESTS.rglob("*.py")
        if path.stem != "__init__"
    }
    assert {m.split(".")[0] for m in modules if "." in m} == {"unit", "assets", "sensors", "e2e"}
    assert not [m for m in modules if m.startswith("test_")]  # every test is in a layer
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            prefix = "selfheal_dagster_tests."
            found |= {n[len(prefix) :] for n in names if n.startswith(prefix)} & set(modules)
        graph[module] = found - {module}
    is_test = {m for m in modules if m.rsplit(".", 1)[-1].startswith("test_")}
    importing_tests = sorted((m, t) for m, found in graph.items() for t in found if t in is_test)
    assert importing_tests == []
    support = {m: found for m, found in graph.items() if m not in is_test}
    assert {"support", "daemon", "postgres", "bigquery_double"} <= set(support)

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in support.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    assert [m for m in support if reaches(m, m, set())] == []
