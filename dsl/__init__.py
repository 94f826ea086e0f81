"""The mapping language front end: ``parse`` one text, ``load_project`` files and folders, ``check`` them.

    parse(text, file) -> ParseResult(module, diagnostics)
    load_project(paths, root=None) -> (Project, diagnostics)
    check(project, catalog) -> list[Diagnostic]
    analyze(project, catalog) -> Analysis     (check + resolved tables and fields, for the compiler)
"""

from __future__ import annotations

from mapsync.dsl.checker import Analysis, FlowInfo, analyze, check
from mapsync.dsl.compiler import compile_project
from mapsync.dsl.parser import ParseResult, parse
from mapsync.dsl.project import Project, load_project

__all__ = ["Analysis", "FlowInfo", "ParseResult", "Project", "analyze", "check", "compile_project", "load_project", "parse"]
