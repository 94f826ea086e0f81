"""The errors of the mapping language, re-exported from mapsync's one tree (``mapsync/errors.py``).

Errors raised for a user's input carry ``Diagnostic`` objects so the CLI can render every problem at
once with its location; nothing here is ever shown as a traceback.
"""

from __future__ import annotations

from mapsync.errors import CheckError, CompileError, DslError, DslSyntaxError, MapsyncError, RecordError

__all__ = ["CheckError", "CompileError", "DslError", "DslSyntaxError", "MapsyncError", "RecordError"]
