"""The package's shape: layers import one way, no import circles, the checker stands alone,
and functions are short enough to read at once (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "compact_proofs"

# Rank of each layer: a module may import its own layer or a lower one, never a higher one.
LAYERS = {
    "errors": 0, "_version": 0, "allocator": 0,
    "model": 1, "soundness": 2, "proofs": 3, "analysis": 4, "pipeline": 5, "api": 6, "cli": 7,
}  # fmt: skip
MAX_FUNCTION_LINES = 80
LONG_FUNCTIONS: dict[str, str] = {}  # "module:function" -> why it is longer


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Modules of this package that `path` imports, anywhere in the file (a name imported
    from a package counts as the submodule when one of that name exists)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("compact_proofs")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compact_proofs"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found - {"compact_proofs"}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


GRAPH = {m: _imports(p) for m, p in MODULES.items() if m != "compact_proofs"}


def test_every_module_belongs_to_a_layer() -> None:
    for module in GRAPH:
        assert module.split(".")[1] in LAYERS, f"{module} is in no layer of LAYERS"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_one_way(module: str) -> None:
    upward = [m for m in GRAPH[module] if _layer(m) > _layer(module)]
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                circle = [*path[path.index(dep) :], dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_checker_imports_only_itself() -> None:
    checker = [m for m in GRAPH if m.startswith("compact_proofs.soundness.checker")]
    assert checker
    for module in checker:
        outside = [m for m in GRAPH[module] if not m.startswith("compact_proofs.soundness.checker")]
        assert not outside, f"{module} imports {outside}: the checker must stand alone"


def test_checker_runs_with_the_rest_of_the_package_blocked() -> None:
    """Import the checker in a fresh interpreter that refuses every other module of ours."""
    allowed = ("compact_proofs", "compact_proofs._version", "compact_proofs.soundness")
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("compact_proofs") and name not in {allowed!r} and not \\
                name.startswith("compact_proofs.soundness.checker"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from compact_proofs.soundness.checker import check_certificates
assert not any(m.startswith("compact_proofs.") and not m.startswith(
    ("compact_proofs.soundness", "compact_proofs._version")) for m in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_functions_are_short() -> None:
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                key = f"{module}:{node.name}"
                if lines > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    long.append(f"{key} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
