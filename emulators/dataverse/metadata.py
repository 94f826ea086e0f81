"""Table definitions of the emulated org, read from the Dataverse schema snapshots, and the two
metadata documents built from them: the CSDL ``$metadata`` and ``EntityDefinitions`` attribute metadata.

A snapshot (``schemas/snapshot.schema.json``) names the table, its primary key, entity set, alternate
keys, change tracking, and fields with types, lengths and option sets. The emulator adds the system
columns every Dataverse table has (primary key, ``createdon``, ``modifiedon``, ``versionnumber``) when a
snapshot leaves them out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

__all__ = ["ColumnDef", "TableDef", "attributes_metadata", "csdl", "load_tables"]

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT_DIR = ROOT / "schemas" / "snapshots" / "d365"

EDM_TYPES = {
    "string": "Edm.String", "memo": "Edm.String", "integer": "Edm.Int32", "bigint": "Edm.Int64",
    "decimal": "Edm.Decimal", "money": "Edm.Decimal", "double": "Edm.Double", "boolean": "Edm.Boolean",
    "datetime": "Edm.DateTimeOffset", "date": "Edm.Date", "guid": "Edm.Guid", "choice": "Edm.Int32",
    "multichoice": "Edm.String", "lookup": "Edm.Guid", "enum": "Edm.String",
}
ATTRIBUTE_TYPES = {
    "string": ("String", "StringAttributeMetadata"), "memo": ("Memo", "MemoAttributeMetadata"),
    "integer": ("Integer", "IntegerAttributeMetadata"), "bigint": ("BigInt", "BigIntAttributeMetadata"),
    "decimal": ("Decimal", "DecimalAttributeMetadata"), "money": ("Money", "MoneyAttributeMetadata"),
    "double": ("Double", "DoubleAttributeMetadata"), "boolean": ("Boolean", "BooleanAttributeMetadata"),
    "datetime": ("DateTime", "DateTimeAttributeMetadata"), "date": ("DateTime", "DateTimeAttributeMetadata"),
    "guid": ("Uniqueidentifier", "UniqueIdentifierAttributeMetadata"),
    "choice": ("Picklist", "PicklistAttributeMetadata"),
    "multichoice": ("Virtual", "MultiSelectPicklistAttributeMetadata"),
    "lookup": ("Lookup", "LookupAttributeMetadata"), "enum": ("String", "StringAttributeMetadata"),
}
_NS = uuid.UUID("6f1d8a0e-51b4-4d57-9a53-6d6170737963")  # stable MetadataIds across runs


@dataclass(frozen=True, slots=True)
class ColumnDef:
    """One attribute. ``name`` is the logical name; a lookup is stored and read as ``_<name>_value``."""

    name: str
    type: str
    max_length: int | None = None
    options: tuple[tuple[int, str], ...] = ()
    targets: tuple[str, ...] = ()
    read_only: bool = False
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    display_name: str | None = None

    @property
    def wire_name(self) -> str:
        return f"_{self.name}_value" if self.type == "lookup" else self.name

    @property
    def edm(self) -> str:
        return EDM_TYPES.get(self.type, "Edm.String")


@dataclass(frozen=True, slots=True)
class TableDef:
    name: str
    entity_set: str
    primary_key: str
    primary_name: str | None
    columns: tuple[ColumnDef, ...]
    change_tracking: bool = True
    is_activity: bool = False
    alternate_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()
    display_name: str | None = None
    by_wire: Mapping[str, ColumnDef] = field(default_factory=dict, compare=False, repr=False)

    def column(self, wire_name: str) -> ColumnDef | None:
        return self.by_wire.get(wire_name)


def _table_from_snapshot(snap: Mapping[str, Any]) -> TableDef:
    name = snap["name"]
    pk = snap["primary_key"]
    raw_fields: Mapping[str, Mapping[str, Any]] = snap["fields"]
    system = {
        pk: {"type": "guid", "read_only": False},
        "createdon": {"type": "datetime", "read_only": True},
        "modifiedon": {"type": "datetime", "read_only": True},
        "versionnumber": {"type": "bigint", "read_only": True},
    }
    merged: dict[str, Mapping[str, Any]] = {**system, **raw_fields}
    columns = []
    for col_name, spec in merged.items():
        if spec.get("type") == "object":  # campaign-only shape; never in a d365 snapshot
            continue
        columns.append(
            ColumnDef(
                name=col_name,
                type=spec["type"],
                max_length=spec.get("max_length"),
                options=tuple((int(o["value"]), str(o["label"])) for o in spec.get("options", ())),
                targets=tuple(spec.get("targets", ())),
                # A client may choose the primary key on create, although snapshots mark it read-only.
                read_only=(bool(spec.get("read_only", False)) and col_name != pk)
                or col_name in ("createdon", "modifiedon", "versionnumber"),
                required=bool(spec.get("required", False)),
                minimum=spec.get("min"),
                maximum=spec.get("max"),
                display_name=spec.get("display_name"),
            )
        )
    entity_set = snap.get("entity_set") or (name + "s")
    return TableDef(
        name=name,
        entity_set=entity_set,
        primary_key=pk,
        primary_name=snap.get("primary_name"),
        columns=tuple(columns),
        change_tracking=bool(snap.get("change_tracking", False)),  # the snapshot omits false
        is_activity=bool(snap.get("is_activity", False)),
        alternate_keys=tuple((k, tuple(v)) for k, v in sorted(snap.get("alternate_keys", {}).items())),
        display_name=snap.get("display_name"),
        by_wire={c.wire_name: c for c in columns},
    )


def _snapshot_dicts(source: Any) -> list[Mapping[str, Any]]:
    if source is None:
        source = SNAPSHOT_DIR
    if isinstance(source, (str, Path)):
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(source).glob("*.json"))]
    if isinstance(source, Mapping):
        return [source]
    if callable(getattr(source, "tables", None)):  # dsl.schema.Catalog
        from dsl.schema import dump_table

        return [dump_table(t) for t in source.tables("d365")]
    if isinstance(source, Iterable):
        items = list(source)
        if all(isinstance(s, TableDef) for s in items):
            raise TypeError("pass snapshots, not TableDefs")
        return [s for s in items if s.get("system", "d365") == "d365"]
    raise TypeError(f"cannot read Dataverse tables from {type(source).__name__}")


def load_tables(source: Any = None) -> dict[str, TableDef]:
    """Table definitions by logical name, from snapshot dicts, a directory of snapshots, or a catalog."""
    tables = {}
    for snap in _snapshot_dicts(source):
        if snap.get("system", "d365") != "d365":
            continue
        t = _table_from_snapshot(snap)
        tables[t.name] = t
    return tables


# -- $metadata (CSDL) -------------------------------------------------------------------------------


def _nav_properties(table: TableDef, col: ColumnDef) -> list[tuple[str, str]]:
    """(navigation property name, target table) for a lookup, named the way Dataverse names them."""
    if col.name == "regardingobjectid":
        return [(f"regardingobjectid_{t}_{table.name}", t) for t in col.targets]
    if len(col.targets) > 1:
        return [(f"{col.name}_{t}", t) for t in col.targets]
    return [(col.name, t) for t in col.targets]


def nav_properties(table: TableDef) -> dict[str, tuple[ColumnDef, str]]:
    """Every single-valued navigation property of ``table``: name -> (lookup column, target table)."""
    out: dict[str, tuple[ColumnDef, str]] = {}
    for col in table.columns:
        if col.type == "lookup":
            for nav, target in _nav_properties(table, col):
                out[nav] = (col, target)
    return out


def csdl(tables: Mapping[str, TableDef]) -> str:
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        '<Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
        '<EntityType Name="crmbaseentity" Abstract="true"/>',
    ]
    for t in tables.values():
        lines.append(f'<EntityType Name="{t.name}" BaseType="mscrm.crmbaseentity">')
        lines.append(f'<Key><PropertyRef Name="{t.primary_key}"/></Key>')
        for c in t.columns:
            extra = f' MaxLength="{c.max_length}"' if c.max_length and c.edm == "Edm.String" else ""
            lines.append(f'<Property Name="{c.wire_name}" Type="{c.edm}"{extra}/>')
        for nav, (_col, target) in nav_properties(t).items():
            if target in tables:
                lines.append(f'<NavigationProperty Name="{nav}" Type="mscrm.{target}"/>')
        lines.append("</EntityType>")
    lines.append('<EntityContainer Name="System">')
    for t in tables.values():
        lines.append(f'<EntitySet Name="{t.entity_set}" EntityType="Microsoft.Dynamics.CRM.{t.name}"/>')
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines)


# -- EntityDefinitions ------------------------------------------------------------------------------


def _label(text: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True,
                 "MetadataId": str(uuid.uuid5(_NS, "label:" + text)), "HasChanged": None}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def attribute_metadata(table: TableDef, col: ColumnDef, *, expand_optionset: bool) -> dict[str, Any]:
    attr_type, cast = ATTRIBUTE_TYPES.get(col.type, ("String", "StringAttributeMetadata"))
    out: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{cast}",
        "LogicalName": col.name,
        "SchemaName": col.name,
        "MetadataId": str(uuid.uuid5(_NS, f"{table.name}.{col.name}")),
        "AttributeType": attr_type,
        "EntityLogicalName": table.name,
        "IsPrimaryId": col.name == table.primary_key,
        "IsPrimaryName": col.name == table.primary_name,
        "DisplayName": _label(col.display_name or col.name),
        "RequiredLevel": {"Value": "ApplicationRequired" if col.required else "None"},
    }
    if col.max_length is not None and col.type in ("string", "memo", "enum"):
        out["MaxLength"] = col.max_length
    if col.type == "lookup":
        out["Targets"] = list(col.targets)
    if col.minimum is not None:
        out["MinValue"] = col.minimum
    if col.maximum is not None:
        out["MaxValue"] = col.maximum
    if col.type in ("choice", "multichoice") and expand_optionset:
        out["OptionSet"] = {
            "MetadataId": str(uuid.uuid5(_NS, f"optionset:{table.name}.{col.name}")),
            "Name": f"{table.name}_{col.name}",
            "IsGlobal": False,
            "OptionSetType": "Picklist",
            "Options": [{"Value": v, "Label": _label(lbl), "Description": _label("")} for v, lbl in col.options],
        }
    return out


CASTS = {cast: {t for t, (_a, c) in ATTRIBUTE_TYPES.items() if c == cast} for _a, cast in ATTRIBUTE_TYPES.values()}


def attributes_metadata(table: TableDef, cast: str | None, *, expand_optionset: bool) -> list[dict[str, Any]]:
    """Attribute metadata of ``table``, optionally only those of one metadata type (``PicklistAttributeMetadata``)."""
    wanted = CASTS.get(cast) if cast else None
    return [
        attribute_metadata(table, c, expand_optionset=expand_optionset)
        for c in table.columns
        if wanted is None or c.type in wanted
    ]


def xml_attr(value: str) -> str:
    return quoteattr(value)
