"""Hover text (Markdown): fields and tables from the schema snapshots, functions from their docs, flows and
replacements from their declarations."""

from __future__ import annotations

from mapsync.dsl import ast
from mapsync.dsl.functions import FUNCTIONS, function_markdown
from mapsync.dsl.schema import Catalog, FieldSchema, TableSchema
from mapsync.lsp.locate import Occurrence
from mapsync.lsp.workspace import Snapshot

__all__ = ["describe", "describe_field", "field_at", "table_of"]


def _snapshot_line(catalog: Catalog, table: TableSchema) -> list[str]:
    where = catalog.snapshot_file(table.system, table.name)
    return ["", f"from the snapshot `{where}`"] if where else ["", "from the live schema"]


def describe_field(f: FieldSchema, table: TableSchema, dotted: str, catalog: Catalog) -> str:
    facts = [f"`{f.type}` ({f.value_type})"]
    if f.max_length is not None:
        facts.append(f"max length {f.max_length}")
    facts.append("required" if f.required else "optional")
    if f.read_only:
        facts.append("read-only")
    if f.targets:
        facts.append("points at " + " or ".join(f.targets))
    title = f"**{table.dotted}.{dotted}**" + (f" — {f.display_name}" if f.display_name else "")
    out = [title, "", ", ".join(facts)]
    if f.options:
        out += ["", "| value | label |", "| --- | --- |"] + [f"| {v} | {label} |" for v, label in f.options]
    if f.values:
        out += ["", "values: " + ", ".join(f"`{v}`" for v in f.values)]
    out += _snapshot_line(catalog, table)
    return "\n".join(out)


def _describe_table(table: TableSchema, catalog: Catalog) -> str:
    out = [f"**{table.dotted}**" + (f" — {table.display_name}" if table.display_name else ""), "",
           f"primary key `{table.primary_key}`, {len(table.fields)} fields"]
    if table.feed:
        out.append("an event feed: read only")
    out += _snapshot_line(catalog, table)
    return "\n".join(out)


def table_of(snap: Snapshot, occ: Occurrence) -> TableSchema | None:
    """The table a field occurrence is resolved against (the flow's source or target, or the opt-out's table)."""
    owner = occ.owner
    if isinstance(owner, ast.Flow):
        info = snap.analysis.flows.get(owner.name)
        if info is None or info.flow is not owner:
            return None
        return info.target if occ.kind == "target-field" else info.source
    if isinstance(owner, ast.OptOut) and isinstance(occ.node, ast.FieldRef):
        return snap.catalog.table(occ.node.table.system, occ.node.table.name)
    return None


def field_at(snap: Snapshot, occ: Occurrence, offset: int) -> tuple[TableSchema, FieldSchema, str] | None:
    """The field under the cursor: for ``location.city`` the part the offset is in."""
    table = table_of(snap, occ)
    if table is None:
        return None
    if isinstance(occ.node, ast.FieldRef):
        parts: tuple[str, ...] = (occ.node.field,)
    else:
        assert isinstance(occ.node, ast.Path)
        upto = max(0, min(offset, occ.span.end) - occ.span.start)
        index = min(occ.name[:upto].count("."), len(occ.node.parts) - 1)
        parts = occ.node.parts[: index + 1]
    f = table.resolve(parts)
    return (table, f, ".".join(parts)) if f is not None else None


def _source(snap: Snapshot, file: str, span: ast.Span) -> str:
    return snap.text_of(file)[span.start : span.end]


def describe(snap: Snapshot, occ: Occurrence, offset: int) -> str | None:
    project = snap.project
    if occ.kind in ("source-field", "target-field", "optout-field"):
        found = field_at(snap, occ, offset)
        return describe_field(found[1], found[0], found[2], snap.catalog) if found else None
    if occ.kind == "table":
        assert isinstance(occ.node, ast.TableRef)
        table = snap.catalog.table(occ.node.system, occ.node.name)
        return _describe_table(table, snap.catalog) if table else None
    if occ.kind == "function":
        return f"**{occ.name}**\n\n" + function_markdown(FUNCTIONS[occ.name])
    if occ.kind in ("replace", "replace-ref") and occ.name in project.replaces:
        file = project.replace_file(occ.name)
        rep = project.replaces[occ.name]
        return f"replacement declared in `{file}` line {rep.span.line}\n\n```mapsync\n{_source(snap, file, rep.span)}\n```"
    if occ.kind in ("flow", "flow-ref") and occ.name in project.flows:
        file = project.flow_file(occ.name)
        flow = project.flows[occ.name]
        lines = [f"flow {flow.name}"]
        if flow.source is not None:
            lines.append(f"  from {flow.source.dotted}")
        if flow.target is not None:
            lines.append(f"  to   {flow.target.dotted}")
        if flow.key is not None:
            lines.append(f"  key  {flow.key.source.dotted} -> {flow.key.target.dotted}")
        return (f"flow declared in `{file}` line {flow.span.line}, {len(flow.assignments)} assignments\n\n"
                "```mapsync\n" + "\n".join(lines) + "\n```")
    if occ.kind == "import":
        return f"imports `{occ.name}`: its replacements can be called here"
    return None
