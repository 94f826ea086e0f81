"""`mapsync compile FLOW [--mappings PATH]`: show the Python a flow compiles to and its pushed-down filter.

For reviewing what a mapping really does: the generated module (one function per concern), then the
OData ``$filter`` a full run sends to Dynamics 365 and the part of ``where`` that stays local.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mapsync.dsl.compiler import compile_project
from mapsync.dsl.diagnostics import did_you_mean, render_text
from mapsync.dsl.errors import CheckError
from mapsync.dsl.project import ProjectPathError, load_project
from mapsync.dsl.schema import load_catalog
from mapsync.engine.commands._common import add_command

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "compile", "show the generated Python of a flow and its pushed-down $filter", run)
    parser.add_argument("flow", metavar="FLOW", help="flow name, e.g. contacts")
    parser.add_argument("--mappings", default="mappings/", metavar="PATH",
                        help="mapping files or folder (default: mappings/)")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        project, _ = load_project([Path(args.mappings)])
    except ProjectPathError as exc:
        print(f"mapsync compile: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        flows = compile_project(project, load_catalog())
    except CheckError as exc:
        print(render_text(exc.diagnostics, project.sources), file=sys.stderr, end="")
        return EXIT_FINDINGS
    flow = flows.get(args.flow)
    if flow is None:
        hint = did_you_mean(args.flow, flows) or f"flows: {', '.join(sorted(flows))}"
        print(f"mapsync compile: no flow `{args.flow}` ({hint})", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    out.write(flow.python_source)
    out.write("\n# ---- filter\n")
    if flow.source.system != "d365":
        out.write(f"# {flow.source.dotted} is not a Dynamics 365 table: the whole where runs locally\n")
    out.write(f"$filter:  {flow.pushdown if flow.pushdown is not None else '(none: every row is read)'}\n")
    out.write(f"residual: {flow.residual_text if flow.residual_text is not None else '(none)'}\n")
    out.write(f"$select:  {','.join(flow.select)}\n")
    return EXIT_OK
