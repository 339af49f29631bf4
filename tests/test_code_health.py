"""The code keeps the house rules: lint, format, strict types, layers without cycles, files a
reader can hold in one sitting. CI runs these with the rest of the suite."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("app", "spark", "dashboards", "infra", "alembic")
#: What each part may import besides itself; infra is the edge that wires them all.
ALLOWED = {
    "app": set(),
    "spark": {"app"},
    "dashboards": {"app"},
    "alembic": {"app"},
    "infra": {"app", "spark", "dashboards", "alembic"},
}
MAX_LINES = 450
#: A longer file says why in its first lines, with this phrase.
LONG_FILE_REASON = "longer than 450 lines:"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_check_is_clean() -> None:
    result = run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    result = run("ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes() -> None:
    # The configuration (pyproject's [tool.mypy]) is strict; alembic/env.py is named explicitly
    # because the migrations themselves are excluded.
    result = run("mypy", "app", "spark", "dashboards", "infra", "alembic/env.py")
    assert result.returncode == 0, result.stdout + result.stderr


def source_files() -> list[Path]:
    return sorted(path for part in PARTS for path in (ROOT / part).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, at any depth (inside functions
    too), made absolute."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from package import module` imports a module too.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in source_files()}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        source = path.read_text()
        for target in imported_modules(source, name, is_package=path.name == "__init__.py"):
            if target in modules and target != name:
                graph[name].add(target)
        graph.setdefault(name, set())
    return graph


def test_each_part_imports_only_the_parts_below_it() -> None:
    wrong = [
        f"{source} imports {target}"
        for source, targets in project_graph().items()
        for target in targets
        if target.split(".")[0] != source.split(".")[0]
        and target.split(".")[0] not in ALLOWED[source.split(".")[0]]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph = project_graph()
    cycles, state, stack = [], dict.fromkeys(graph, 0), []

    def visit(node: str) -> None:  # 0 new, 1 on the stack, 2 done
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state[target] == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif state[target] == 0:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_the_parser_sees_lazy_and_relative_imports() -> None:
    # The checks above are only as good as the parser: an import inside a function counts.
    source = "import os\n\ndef f():\n    from app.config import clients\n    from . import sink\n"
    assert imported_modules(source, "spark.job") == {
        "os", "app.config", "app.config.clients", "spark", "spark.sink",
    }  # fmt: skip


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_source_files_stay_short_or_say_why(path: Path) -> None:
    lines = path.read_text().splitlines()
    if len(lines) > MAX_LINES:
        head = "\n".join(lines[:30]).lower()
        assert LONG_FILE_REASON in head, (
            f"{len(lines)} lines: split it, or say why in its first lines ({LONG_FILE_REASON} …)"
        )
