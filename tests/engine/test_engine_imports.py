"""The engine takes the compiled project from the language and nothing else of it: no syntax tree."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
FORBIDDEN = "mapsync.dsl.ast"


def imports_of(path: Path) -> set[str]:
    return imports_in(path.read_text(encoding="utf-8"))


def imports_in(text: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_engine_module_imports_the_syntax_tree() -> None:
    offenders = {}
    for path in sorted(ENGINE.rglob("*.py")):  # the language server, which walks the tree, lives in mapsync/lsp
        bad = sorted(n for n in imports_of(path) if n.startswith(FORBIDDEN))
        if bad:
            offenders[str(path.relative_to(ENGINE.parent))] = bad
    assert offenders == {}


def test_the_scan_sees_every_way_of_importing_the_tree() -> None:
    for text in ("from mapsync.dsl import ast", "import mapsync.dsl.ast", "from mapsync.dsl.ast import Flow",
                 "def f():\n    from mapsync.dsl import ast as syntax\n"):
        assert any(n.startswith(FORBIDDEN) for n in imports_in(text)), text
