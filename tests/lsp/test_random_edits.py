"""Property: whatever a user types, the server keeps answering, and the diagnostics it ends with are those
`mapsync validate --format json` gives for the same text."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types as lsp

from tests.lsp.conftest import FIXTURE, as_validate, comparable, validate_json
from tests.lsp.session import Session

PIECES = ["", " ", "\n", "x", "=", "==", "{", "}", "(", ")", ",", ".", '"', "#", "->", "=>", "1", "-2", "@2024-01-01",
          "emailaddress1", "emailadress1", "lower(", "link(", "map", "flow", "replace", "import", "where", "key",
          "required", "else", "genders", "people", "campaign.", "d365.", "and", "??", "&", "\t"]


@st.composite
def edits(draw: st.DrawFn, text: str) -> list[tuple[int, int, str]]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = min(len(text), start + draw(st.integers(0, 12)))
        new = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=4)))
        out.append((start, end, new))
        text = text[:start] + new + text[end:]
    return out


def position(text: str, offset: int) -> lsp.Position:
    line = text.count("\n", 0, offset)
    return lsp.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), name=st.sampled_from(["people.map", "cars.map", "shared.map"]))
def test_random_edits_end_with_the_diagnostics_of_validate(session: Session, workspace: Path, data: st.DataObject,
                                                           name: str) -> None:
    doc = f"project/{name}"
    original = (FIXTURE / name).read_text(encoding="utf-8")
    session.open(doc, original)
    try:
        for start, end, new in data.draw(edits(original)):
            text = session.text(doc)
            session.edit(doc, *_range(text, start, end), new)
            cursor = position(session.text(doc), start + len(new))
            session.complete(doc, cursor.line, cursor.character)  # answers (an error would raise here)
            session.hover(doc, cursor.line, cursor.character)
        (workspace / doc).write_text(session.text(doc), encoding="utf-8")
        assert as_validate(session) == comparable(validate_json(workspace))
        assert session.messages == []  # no handler failed (pygls would have said so)
    finally:
        session.close_doc(doc)
        shutil.copy(FIXTURE / name, workspace / doc)


def _range(text: str, start: int, end: int) -> tuple[int, int, int, int]:
    a, b = position(text, start), position(text, end)
    return a.line, a.character, b.line, b.character
