"""The fast path's lexical tables are read from grammar.lark (dsl/terminals.py), not written a second time."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mapsync.dsl import _fastparse, terminals
from mapsync.dsl.parser import _lark
from tests.dsl.strategies import KEYWORDS as HAND_WRITTEN_KEYWORDS


def test_keywords_are_the_grammars_quoted_words() -> None:
    assert terminals.KEYWORDS == HAND_WRITTEN_KEYWORDS
    assert _fastparse.KEYWORDS is terminals.KEYWORDS


def test_symbols_and_patterns_are_lark_s_own() -> None:
    lark = _lark()
    for name in ("NAME", "WORD", "NUMBER", "STRING", "DATETIME", "COMMENT"):
        assert lark.get_terminal(name).pattern.value.replace("\n", "\\n") == terminals.PATTERNS[name]  # lark unescapes \\n
    literal_strings = {t.pattern.value for t in lark.terminals if t.pattern.type == "str"}
    assert {s for s in literal_strings if not s.isidentifier()} <= set(terminals.SYMBOLS)
    assert {s for s in literal_strings if s.isidentifier()} == terminals.KEYWORDS
    # The rest are the alternatives of CMP_OP, ADD_OP, MUL_OP: each is one whole terminal of lark's.
    patterns = [t.pattern.to_regexp() for t in lark.terminals]
    assert all(any(re.fullmatch(p, symbol) for p in patterns) for symbol in terminals.SYMBOLS)


@given(st.text(alphabet="@0123456789-T:.Z+abc\"\\#_ \n", max_size=30))
def test_uncaptured_patterns_match_the_same_text(text: str) -> None:
    for pattern in terminals.PATTERNS.values():
        assert bool(re.fullmatch(pattern, text)) == bool(re.fullmatch(terminals.uncaptured(pattern), text))
