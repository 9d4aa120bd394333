"""The dependency rules of the package, read from the source with ``ast``: every import of every
module of ``exporter/``, including those inside functions (the lazy ones); imports under
``if TYPE_CHECKING:`` are left out, they never run.

- no import cycle between packages (a subpackage or a top-level module of ``exporter`` is one);
- a manager module (any module of a manager package but its ``__init__``, which wires the
  package's module-level manager) imports no backend (``exporter.sinks``, ``exporter.channels``)
  and no other manager's module-level manager;
- the module of each manager class imports, of the project, only the ports, config, metrics,
  errors, tracing, the manager base, the secret masker and its own package.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "exporter"
MANAGERS = {"alert_manager": "alert_manager", "backup_manager": "backup_manager",
            "logger_manager": "logger_manager", "profiler": "profiler", "recovery_manager": "recovery_manager"}
BACKENDS = ("exporter.sinks", "exporter.channels", "exporter.shared_state")
MANAGER_MAY_IMPORT = {"exporter.ports", "exporter.config", "exporter.metrics", "exporter.errors",
                      "exporter.tracing", "exporter._manager_base", "exporter._masking",
                      "exporter._files"}  # the atomic-write and 0700-directory helpers (stdlib only)


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` but the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                yield branch
                yield from _runtime_nodes(branch)
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(module: str) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` for each import ``module`` runs; a name
    that is a submodule is given as the module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (base, alias.name))
    return found


def unit(module: str) -> str:
    """The package a module of the project belongs to: ``exporter.<first part>``."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges = graph.setdefault(unit(module), set())
        for target, _ in imports(module):
            if target.startswith("exporter.") and unit(target) != unit(module):
                edges.add(unit(target))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_imports_seen_include_lazy_ones_and_leave_type_checking_out():
    seen = imports("exporter.recovery_manager")  # its wiring imports inside a function
    assert ("exporter.backup_manager.archives", None) in seen
    assert ("exporter.alert_manager", "alert_manager") in seen
    assert ("exporter.config", "Settings") not in imports("exporter.channels.log")  # for its annotations only


def test_no_import_cycle_between_packages():
    graph = package_graph()
    assert "exporter.sinks" in graph["exporter.logger_manager"]  # the walk sees the wiring
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


MANAGER_MODULES = [module for module in MODULES
                   if module.split(".")[1:2] and module.split(".")[1] in MANAGERS
                   and MODULES[module].name != "__init__.py"]


@pytest.mark.parametrize("module", MANAGER_MODULES)
def test_a_manager_module_imports_no_backend_and_no_other_managers_singleton(module):
    own = module.split(".")[1]
    wrong = []
    for target, name in imports(module):
        if target.startswith(BACKENDS):
            wrong.append(target)
        other = target.split(".")[1] if target.startswith("exporter.") and target.count(".") else None
        if other in MANAGERS and other != own and (name == MANAGERS[other] or target.endswith(".manager")):
            wrong.append(f"{target}:{name}" if name else target)
    assert wrong == []


@pytest.mark.parametrize("package", sorted(MANAGERS))
def test_a_manager_class_module_imports_only_the_ports_and_the_core(package):
    module = f"exporter.{package}.manager"
    project = {target for target, _ in imports(module) if target.startswith("exporter")}
    outside = {target for target in project
               if target not in MANAGER_MAY_IMPORT and not target.startswith(f"exporter.{package}")}
    assert outside == set()


BACKEND_SECTIONS = {"exporter.sinks": "ShippingSettings", "exporter.channels": "AlertSettings"}


def _all_imported_names(path: Path) -> set[str]:
    """Every name imported by the module, TYPE_CHECKING imports included (annotations count)."""
    return {alias.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) for alias in node.names}


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith(tuple(BACKEND_SECTIONS))
                                    and MODULES[m].name != "__init__.py"])
def test_a_backend_sees_only_its_own_settings_section(module):
    section = BACKEND_SECTIONS[unit(module)]
    tree = ast.parse(MODULES[module].read_text())
    assert "Settings" not in _all_imported_names(MODULES[module])  # not the whole settings object
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "from_settings":
            assert ast.unparse(node.args.args[0].annotation) == section
        if isinstance(node, ast.Attribute):  # nor another section or where a value came from
            assert node.attr not in {"sources", "general", "metrics_port"}, ast.unparse(node)
