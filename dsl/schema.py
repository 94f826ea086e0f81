"""Schema snapshots: what tables, fields, types, lengths and option sets each system has.

The shipped snapshots live in ``schemas/snapshots/<system>/<name>.json`` (format:
``schemas/snapshot.schema.json``). The checker reads them offline, the emulators serve them as
``$metadata`` / ``resourceType``, and ``mapsync schema pull`` writes fresh ones from a live service
through ``dump_table``/``render_table`` — which produce the files' exact text, so a pull against an
unchanged service is a no-op in git.

    load_catalog(root) -> Catalog          cached per root; invalid files raise SchemaError
    project_snapshot_root(folder) -> Path  a project's own snapshots, else the built-in ones
    Catalog.table(system, name)            -> TableSchema | None
    Catalog.from_tables(tables)            a catalog from a live pull instead of the shipped files
    TableSchema.resolve(("location", "city"))  -> FieldSchema | None
    dump_table(t) -> dict, render_table(t) -> str, write_table(t, root) -> Path
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mapsync import resources
from mapsync.dsl.types import ValueType, value_type_for
from mapsync.errors import DslError

__all__ = [
    "DEFAULT_ROOT",
    "PROJECT_SNAPSHOTS",
    "SNAPSHOT_SCHEMA_PATH",
    "Catalog",
    "FieldSchema",
    "SchemaError",
    "TableSchema",
    "dump_table",
    "load_catalog",
    "load_table",
    "parse_table",
    "project_snapshot_root",
    "render_table",
    "snapshot_path",
    "write_table",
]

DEFAULT_ROOT = resources.snapshots_dir()
SNAPSHOT_SCHEMA_PATH = resources.schemas_dir() / "snapshot.schema.json"

SYSTEMS = ("d365", "campaign")

# Where a project keeps its own snapshots, relative to its folder (the one holding mapsync.yaml).
PROJECT_SNAPSHOTS = Path("schemas") / "snapshots"


def project_snapshot_root(folder: Path) -> Path:
    """The snapshots a project checks against: its own ``schemas/snapshots`` when it has that folder (what
    ``mapsync init`` writes and ``mapsync schema pull`` refreshes), else the built-in ones."""
    own = folder / PROJECT_SNAPSHOTS
    return own if own.is_dir() else DEFAULT_ROOT


class SchemaError(DslError):
    """A snapshot file (or a pulled schema) is not valid. Names the file and the JSON path of the problem."""

    def __init__(self, message: str, *, file: str, json_path: str = "$") -> None:
        super().__init__(f"{file}: {json_path}: {message}")
        self.file = file
        self.json_path = json_path
        self.reason = message


_EMPTY: Mapping[str, FieldSchema] = MappingProxyType({})
_NO_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldSchema:
    """One field (column / property). ``type`` is the snapshot's wire type, ``value_type`` its logical type."""

    name: str
    type: str
    value_type: ValueType
    display_name: str | None = None
    max_length: int | None = None
    required: bool = False
    read_only: bool = False
    min: float | None = None
    max: float | None = None
    precision: int | None = None
    options: tuple[tuple[int, str], ...] = ()  # choice / multichoice: (value, label)
    values: tuple[str, ...] = ()  # enum: the allowed strings
    targets: tuple[str, ...] = ()  # lookup: the tables it may point at
    fields: Mapping[str, FieldSchema] = dc_field(default_factory=lambda: _EMPTY)  # object: nested fields

    def label_for(self, value: int) -> str | None:
        """The display label of an option value, or None when the value is not one of the options."""
        for option_value, label in self.options:
            if option_value == value:
                return label
        return None

    @property
    def option_values(self) -> tuple[int, ...]:
        return tuple(v for v, _ in self.options)


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSchema:
    """A Dynamics 365 table, or a Campaign resource or event feed."""

    system: str
    name: str
    primary_key: str
    fields: Mapping[str, FieldSchema]
    display_name: str | None = None
    primary_name: str | None = None
    entity_set: str | None = None
    is_activity: bool = False
    change_tracking: bool = False
    alternate_keys: Mapping[str, tuple[str, ...]] = dc_field(default_factory=lambda: _NO_KEYS)
    path: str | None = None
    ext_path: str | None = None
    filters: Mapping[str, tuple[str, ...]] = dc_field(default_factory=lambda: _NO_KEYS)
    feed: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.system}.{self.name}"

    def field(self, name: str) -> FieldSchema | None:
        return self.fields.get(name)

    def resolve(self, parts: tuple[str, ...]) -> FieldSchema | None:
        """The field at a dotted path (``("location", "city")``); None when any step is missing."""
        fields: Mapping[str, FieldSchema] = self.fields
        found: FieldSchema | None = None
        for part in parts:
            found = fields.get(part)
            if found is None:
                return None
            fields = found.fields
        return found

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Field names close to a misspelt one, best first: the "did you mean ..." hint."""
        return difflib.get_close_matches(name, list(self.fields), n=limit, cutoff=0.6)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every known table of both systems, keyed by (system, name)."""

    by_key: Mapping[tuple[str, str], TableSchema]
    # The folder the snapshots were read from (None: pulled live); diagnostics name the file they looked for.
    root: Path | None = dc_field(default=None, compare=False)

    @staticmethod
    def from_tables(tables: Iterable[TableSchema]) -> Catalog:
        """A catalog of exactly these tables (e.g. pulled from a live service). Later duplicates win."""
        return Catalog(MappingProxyType({(t.system, t.name): t for t in tables}))

    def replace(self, tables: Iterable[TableSchema]) -> Catalog:
        """This catalog with some tables swapped for (or added from) e.g. a live pull."""
        merged = dict(self.by_key)
        merged.update({(t.system, t.name): t for t in tables})
        return Catalog(MappingProxyType(merged), self.root)

    def snapshot_file(self, system: str, name: str) -> str | None:
        """Where the snapshot of ``system.name`` is (or would be), as a user would type it; None when live."""
        if self.root is None:
            return None
        path = snapshot_path(self.root, system, name)
        relative = Path(os.path.relpath(path, Path.cwd()))
        return path.as_posix() if relative.parts[:3] == ("..", "..", "..") else relative.as_posix()

    def table(self, system: str, name: str) -> TableSchema | None:
        return self.by_key.get((system, name))

    def tables(self, system: str) -> tuple[TableSchema, ...]:
        return tuple(t for (s, n), t in sorted(self.by_key.items()) if s == system)

    def systems(self) -> tuple[str, ...]:
        return tuple(sorted({s for s, _ in self.by_key}))

    def suggest(self, system: str, name: str, limit: int = 3) -> list[str]:
        """Table names of ``system`` close to a misspelt one."""
        names = [n for s, n in self.by_key if s == system]
        return difflib.get_close_matches(name, names, n=limit, cutoff=0.6)

    def __len__(self) -> int:
        return len(self.by_key)


# ------------------------------------------------------------------------------------------------ loading


@functools.cache
def _validator() -> Any:
    # Imported lazily: jsonschema costs ~50 ms to import and only loading needs it.
    import jsonschema

    schema = json.loads(SNAPSHOT_SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_table(data: Any, *, source: str = "<snapshot>") -> TableSchema:
    """Validate one snapshot document (already decoded JSON) and build its ``TableSchema``."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaError(first.message + more, file=source, json_path=_json_path(first.absolute_path))
    fields = _parse_fields(data["fields"])
    table = TableSchema(
        system=data["system"],
        name=data["name"],
        primary_key=data["primary_key"],
        fields=fields,
        display_name=data.get("display_name"),
        primary_name=data.get("primary_name"),
        entity_set=data.get("entity_set"),
        is_activity=data.get("is_activity", False),
        change_tracking=data.get("change_tracking", False),
        alternate_keys=MappingProxyType({k: tuple(v) for k, v in data.get("alternate_keys", {}).items()}),
        path=data.get("path"),
        ext_path=data.get("ext_path"),
        filters=MappingProxyType({k: tuple(v) for k, v in data.get("filters", {}).items()}),
        feed=data.get("feed"),
    )
    _check_references(table, source)
    return table


def _parse_fields(raw: Mapping[str, Any]) -> Mapping[str, FieldSchema]:
    return MappingProxyType({name: _parse_field(name, spec) for name, spec in raw.items()})


def _parse_field(name: str, spec: Mapping[str, Any]) -> FieldSchema:
    return FieldSchema(
        name=name,
        type=spec["type"],
        value_type=value_type_for(spec["type"]),
        display_name=spec.get("display_name"),
        max_length=spec.get("max_length"),
        required=spec.get("required", False),
        read_only=spec.get("read_only", False),
        min=spec.get("min"),
        max=spec.get("max"),
        precision=spec.get("precision"),
        options=tuple((o["value"], o["label"]) for o in spec.get("options", ())),
        values=tuple(spec.get("values", ())),
        targets=tuple(spec.get("targets", ())),
        fields=_parse_fields(spec["fields"]) if "fields" in spec else _EMPTY,
    )


def _check_references(table: TableSchema, source: str) -> None:
    """What JSON Schema cannot say: keys must name fields of the table, option values must be unique."""
    if table.primary_key not in table.fields:
        raise SchemaError(f"primary key {table.primary_key!r} is not a field", file=source, json_path="$.primary_key")
    if table.primary_name is not None and table.primary_name not in table.fields:
        raise SchemaError(
            f"primary name {table.primary_name!r} is not a field", file=source, json_path="$.primary_name"
        )
    for key_name, columns in table.alternate_keys.items():
        for column in columns:
            if column not in table.fields:
                raise SchemaError(
                    f"alternate key column {column!r} is not a field",
                    file=source,
                    json_path=f"$.alternate_keys.{key_name}",
                )
    _check_options(table.fields, source, "$.fields")


def _check_options(fields: Mapping[str, FieldSchema], source: str, path: str) -> None:
    for name, f in fields.items():
        values = f.option_values
        if len(set(values)) != len(values):
            raise SchemaError("option values are not unique", file=source, json_path=f"{path}.{name}.options")
        if f.fields:
            _check_options(f.fields, source, f"{path}.{name}.fields")


def load_table(path: Path) -> TableSchema:
    """Read, decode and validate one snapshot file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"cannot read the file ({exc.strerror})", file=source) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", file=source) from exc
    table = parse_table(data, source=source)
    # The path is the table's identity for the emulators and `schema pull`: it must agree with the content.
    expected = snapshot_path(path.parent.parent, table.system, table.name)
    if path.parent.name != table.system or path.name != expected.name:
        raise SchemaError(
            f"the file must be {table.system}/{expected.name} for system {table.system!r}, name {table.name!r}",
            file=source,
            json_path="$.name",
        )
    return table


def load_catalog(root: Path | None = None) -> Catalog:
    """Every snapshot under ``root`` (default: the shipped ``schemas/snapshots``). Cached per root."""
    return _load_catalog_cached((root or DEFAULT_ROOT).resolve())


@functools.cache
def _load_catalog_cached(root: Path) -> Catalog:
    if not root.is_dir():
        raise SchemaError("the snapshot folder does not exist", file=str(root))
    tables = Catalog.from_tables(load_table(p) for p in sorted(root.glob("*/*.json")))
    return Catalog(tables.by_key, root)


# ------------------------------------------------------------------------------------------------ writing


def snapshot_path(root: Path, system: str, name: str) -> Path:
    return root / system / f"{name}.json"


def dump_table(table: TableSchema) -> dict[str, Any]:
    """The snapshot document of a table, keys in the canonical order; defaults (false, empty) omitted."""
    out: dict[str, Any] = {"system": table.system, "name": table.name}
    if table.display_name is not None:
        out["display_name"] = table.display_name
    out["primary_key"] = table.primary_key
    for key in ("primary_name", "entity_set"):
        value = getattr(table, key)
        if value is not None:
            out[key] = value
    if table.is_activity:
        out["is_activity"] = True
    if table.change_tracking:
        out["change_tracking"] = True
    if table.alternate_keys:
        out["alternate_keys"] = {k: list(v) for k, v in table.alternate_keys.items()}
    for key in ("path", "ext_path"):
        value = getattr(table, key)
        if value is not None:
            out[key] = value
    if table.filters:
        out["filters"] = {k: list(v) for k, v in table.filters.items()}
    if table.feed is not None:
        out["feed"] = table.feed
    out["fields"] = _dump_fields(table.fields)
    return out


def _dump_fields(fields: Mapping[str, FieldSchema]) -> dict[str, Any]:
    return {name: _dump_field(f) for name, f in fields.items()}


def _dump_field(f: FieldSchema) -> dict[str, Any]:
    out: dict[str, Any] = {"type": f.type}
    if f.display_name is not None:
        out["display_name"] = f.display_name
    if f.max_length is not None:
        out["max_length"] = f.max_length
    if f.required:
        out["required"] = True
    if f.read_only:
        out["read_only"] = True
    for key in ("min", "max", "precision"):
        value = getattr(f, key)
        if value is not None:
            out[key] = value
    if f.options:
        out["options"] = [{"value": v, "label": label} for v, label in f.options]
    if f.values:
        out["values"] = list(f.values)
    if f.targets:
        out["targets"] = list(f.targets)
    if f.fields:
        out["fields"] = _dump_fields(f.fields)
    return out


def render_table(table: TableSchema) -> str:
    """The exact text of a snapshot file: 2-space JSON, option objects on one line, trailing newline."""
    return _render(dump_table(table), 0) + "\n"


def _render(value: Any, depth: int) -> str:
    # Hand-rolled rather than json.dumps(indent=2) so that small leaf objects ({"value": 1, "label": "Male"})
    # and string lists stay on one line: the files stay short enough to review in a pull request.
    if isinstance(value, dict) and value and not _is_leaf(value):
        pad, inner = "  " * depth, "  " * (depth + 1)
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_render(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and not all(_is_scalar(v) for v in value):
        pad, inner = "  " * depth, "  " * (depth + 1)
        return "[\n" + ",\n".join(inner + _render(v, depth + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _is_leaf(value: dict[str, Any]) -> bool:
    """A field without options or nested fields (scalars and string lists only)? Keep it on one line."""
    return all(_is_scalar(v) or (isinstance(v, list) and all(map(_is_scalar, v))) for v in value.values())


def write_table(table: TableSchema, root: Path | None = None) -> Path:
    """Write a table's snapshot file under ``root`` (default: the shipped folder); returns the path."""
    path = snapshot_path(root or DEFAULT_ROOT, table.system, table.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_table(table), encoding="utf-8")
    return path
