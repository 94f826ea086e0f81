"""The sync steps stay readable: no function in them runs over 50 lines (counted as the syntax tree says,
docstring and comments included), so each step is one screen with a name."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
STEPS = ("executor.py", "planner.py", "writer.py", "acknowledge.py", "creates.py", "optout.py", "runner.py")
LIMIT = 50


def long_functions(text: str, limit: int = LIMIT) -> dict[str, int]:
    """Functions and methods (nested ones too) longer than ``limit`` lines, by name and line."""
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                out[f"{node.name}:{node.lineno}"] = length
    return out


def test_no_function_of_the_sync_steps_is_over_50_lines() -> None:
    offenders = {name: long_functions((ENGINE / name).read_text(encoding="utf-8")) for name in STEPS}
    assert {name: found for name, found in offenders.items() if found} == {}


def body(lines: int, indent: str = "    ") -> str:
    return "\n".join(f"{indent}x{i} = {i}" for i in range(lines))


def test_the_count_sees_long_functions_and_methods() -> None:
    assert long_functions(f"def f():\n{body(LIMIT)}\n") == {"f:1": LIMIT + 1}
    assert long_functions(f"class C:\n    async def m(self):\n{body(LIMIT, ' ' * 8)}\n") == {"m:2": LIMIT + 1}
    assert long_functions(f"def f():\n{body(LIMIT - 1)}\n") == {}  # exactly at the limit
