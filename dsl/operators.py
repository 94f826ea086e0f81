"""Operator precedence of the mapping language: the one table the printer (formatter and compiler) and push-down read.

grammar.lark spells the same order as nested rules (lark needs it that way); tests/dsl/test_operators.py
parses every pair of operators with lark and checks the grouping this table predicts, so the two cannot
drift apart.

Lowest to highest: or < and < not < comparison / in / is < ?? < & < + - < * / < unary minus < atoms.
Comparisons do not chain (both sides are ``??``-level expressions), ``??`` is right-associative, every
other binary operator is left-associative.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["BINARY", "COMPARISONS", "MAX_DEPTH", "MIRRORED", "NEGATED", "Level", "operand_levels"]

# Deeper expressions than this are refused (E005): never written by hand, and the later passes recurse.
MAX_DEPTH = 200


class Level(IntEnum):
    """How strongly an expression binds; a higher level needs no parentheses inside a lower one."""

    OR = 1
    AND = 2
    NOT = 3
    CMP = 4
    COALESCE = 5
    CONCAT = 6
    SUM = 7
    PRODUCT = 8
    UNARY = 9
    ATOM = 10


COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
# The binary operators of the AST (``ast.Binary.op``) and their levels.
BINARY: dict[str, Level] = {
    "or": Level.OR, "and": Level.AND, "??": Level.COALESCE, "&": Level.CONCAT,
    "+": Level.SUM, "-": Level.SUM, "*": Level.PRODUCT, "/": Level.PRODUCT,
    **dict.fromkeys(COMPARISONS, Level.CMP),
}
# `not (a < b)` is `a >= b`; `1 < a` is `a > 1`.
NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def operand_levels(op: str) -> tuple[Level, Level]:
    """The weakest expression each side of binary ``op`` may hold without parentheses."""
    level = BINARY[op]
    if level is Level.CMP:  # comparisons do not chain: both sides are `??`-level expressions
        return Level.COALESCE, Level.COALESCE
    if level is Level.COALESCE:  # right-associative: `a ?? b ?? c` is `a ?? (b ?? c)`
        return Level.CONCAT, Level.COALESCE
    return level, Level(level + 1)  # left-associative: an equal-level right operand needs parentheses
