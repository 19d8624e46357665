"""The package's shape: modules that import alone, no import cycle, no signal handling in
the library, and docs that stand on their own."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "commit_email"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports anywhere: at the top, under TYPE_CHECKING, or
    inside a function. A cycle through any of them is a cycle a reader has to untangle."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & set(MODULES)


def test_the_package_has_no_import_cycle() -> None:
    graph = {name: _imports(PACKAGE / f"{name}.py") for name in MODULES}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name):], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dependency in sorted(graph[name]):
            visit(dependency, [*path, name])
        done.add(name)

    for name in MODULES:
        visit(name, [])


def test_every_module_imports_alone() -> None:
    def imports(name: str) -> tuple[str, str]:
        result = subprocess.run([sys.executable, "-c", f"import commit_email.{name}"],
                                capture_output=True, text=True, check=False, cwd=ROOT)
        return name, result.stderr.strip().splitlines()[-1] if result.returncode else ""

    alone = [name for name in MODULES if name != "__main__"]  # that one runs the command
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = {name: error for name, error in pool.map(imports, alone) if error}
    assert failed == {}


def test_only_the_command_line_touches_signals() -> None:
    """``Connector.process`` and ``Runner.run`` must be safe in a host application and on
    Windows: no signal handlers, no interval timers from library code."""
    users = []
    for name in MODULES:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if "signal" in names:
                users.append(name)
    assert users == ["cli"]


@pytest.mark.parametrize("marker", ["SPEC §", "SPEC.md", "NOTES.md", "STYLE.md", "../shared"])
def test_the_docs_and_code_cite_nothing_outside_the_repository(marker: str) -> None:
    paths = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted(PACKAGE.glob("*.py"))]
    citing = [str(p.relative_to(ROOT)) for p in paths
              if marker in p.read_text(encoding="utf-8")]
    assert citing == []


def test_the_version_is_written_in_one_place() -> None:
    import importlib.metadata
    import tomllib

    import commit_email

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert importlib.metadata.version("commit-email") == commit_email.__version__
