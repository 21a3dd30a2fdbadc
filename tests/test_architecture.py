"""The house rules, read from the code with `ast`: no import cycle on either side, the browser's FFI (`js`,
`pyodide`) only in the modules allowed to touch it, and no module far past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER, WEB = ROOT / "server", ROOT / "web" / "py"
FFI_MODULES = {"api", "dom", "main"}  # network + browser services, the DOM helpers, the entry point
MAX_LINES = 450


def imports(path: Path, package: str | None) -> set[str]:
    """The sibling modules `path` imports (relative imports in a package, plain names in web/py)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if package is not None and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif package is None and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def graph(folder: Path, package: str | None) -> dict[str, set[str]]:
    modules = {p.stem: p for p in folder.glob("*.py")}
    return {name: imports(path, package) & set(modules) - {name} for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


@pytest.mark.parametrize("folder,package", [(SERVER, "server"), (WEB, None)], ids=["server", "web"])
def test_no_import_cycle(folder, package):
    assert cycle(graph(folder, package)) is None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_ffi_modules_touch_js_or_pyodide():
    touching = {p.stem for p in WEB.glob("*.py") if {"js", "pyodide"} & imports(p, None)}
    assert touching <= FFI_MODULES, f"{sorted(touching - FFI_MODULES)} import js/pyodide"


@pytest.mark.parametrize("folder", [SERVER, WEB], ids=["server", "web"])
def test_no_module_far_past_400_lines(folder):
    long = {p.name: n for p in folder.glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
