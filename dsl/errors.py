"""The root of mapsync's error tree and the errors of the mapping language.

    MapsyncError                      every error mapsync raises on purpose
    └── DslError                      something is wrong with a mapping file
        ├── DslSyntaxError            the text does not parse (carries diagnostics)
        ├── CheckError                names, types or structure are wrong (carries diagnostics)
        └── CompileError              a checked mapping could not be turned into code

Engine errors (connectors, state, configuration) live in ``engine/errors.py`` under the same root.
Errors raised for a user's input carry ``Diagnostic`` objects so the CLI can render every problem at
once with its location; nothing here is ever shown as a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapsync.dsl.diagnostics import Diagnostic

__all__ = ["CheckError", "CompileError", "DslError", "DslSyntaxError", "MapsyncError"]


class MapsyncError(Exception):
    """Root of every error mapsync raises deliberately."""


class DslError(MapsyncError):
    """A mapping file is wrong; ``diagnostics`` says where and why."""

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic] = ()) -> None:
        super().__init__(message)
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)


class DslSyntaxError(DslError):
    """The text of a mapping file does not follow the grammar."""


class CheckError(DslError):
    """A mapping parses but refers to unknown names or mixes types."""


class CompileError(DslError):
    """A checked mapping could not be compiled (an internal limit, never a user typo)."""
