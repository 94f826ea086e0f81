"""Table definitions of the emulated org, read from the Dataverse schema snapshots, and the two
metadata documents built from them: the CSDL ``$metadata`` and ``EntityDefinitions`` attribute metadata.

A snapshot (``schemas/snapshot.schema.json``) names the table, its primary key, entity set, alternate
keys, change tracking, and fields with types, lengths and option sets. The emulator adds the system
columns every Dataverse table has (primary key, ``createdon``, ``modifiedon``, ``versionnumber``) when a
snapshot leaves them out: rows carry them (the change log needs ``versionnumber``) and ``$metadata``
declares them, but the column definitions (``EntityDefinitions``) list only what the snapshot publishes,
in the snapshot's order, so that ``mapsync schema pull`` against the emulator gives back the snapshot.

``EntityDefinitions`` replies follow Microsoft's EntityMetadata / AttributeMetadata / EntityKeyMetadata
types (Web API reference): labels as ``{"LocalizedLabels": [...], "UserLocalizedLabel": {...}}``,
``RequiredLevel.Value``, ``IsValidForCreate``/``IsValidForUpdate``, ``ColumnNumber``, ``MaxLength``,
``Precision``, ``MinValue``/``MaxValue``, ``Targets``, ``Format``/``DateTimeBehavior``; ``statecode`` and
``statuscode`` are State/Status attributes, ``ownerid`` an Owner and account-or-contact lookups Customer
lookups, as in Dataverse. ``Attributes`` and ``Keys`` come only when ``$expand``-ed or addressed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from mapsync import resources
from mapsync.emulators.dataverse.errors import DataverseError
from mapsync.emulators.dataverse.records import query_records

__all__ = ["ColumnDef", "TableDef", "attributes_metadata", "column_default", "csdl", "definitions_list", "definitions_reply", "entity_metadata", "load_tables", "navigation_name"]

SNAPSHOT_DIR = resources.snapshots_dir() / "d365"

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
    precision: int | None = None
    published: bool = True  # False: added by the emulator, not in the snapshot, left out of EntityDefinitions

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
    # The snapshot's order is the column order (ColumnNumber); the system columns it leaves out come last.
    merged: dict[str, Mapping[str, Any]] = dict(raw_fields)
    for col_name, spec in system.items():
        merged.setdefault(col_name, {**spec, "@implicit": True})
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
                precision=spec.get("precision"),
                published=not spec.get("@implicit", False),
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
        from mapsync.dsl.schema import dump_table

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


def delete_behaviour(table: TableDef, col: ColumnDef) -> str | None:
    """What deleting the row a lookup points at does to the row holding the lookup.

    ``"cascade"``: deleted with it; ``"remove_link"``: the lookup is cleared (a change, with a new version);
    ``None``: not modelled, the row keeps the id of a row that is gone.

    This is the emulator's one assumption about relationship behaviour (the snapshots carry no cascade
    configuration): an activity's ``regardingobjectid`` is a parental relationship (activities go with the
    record they are about); a custom lookup gets Dataverse's default for new relationships, Referential with
    Remove Link, as does ``account.primarycontactid``. System relationships not named here are left out.
    """
    if col.type != "lookup":
        return None
    if table.is_activity and col.name == "regardingobjectid":
        return "cascade"
    if (table.name, col.name) == ("account", "primarycontactid") or _is_custom(col.name):
        return "remove_link"
    return None


# Boolean columns whose documented DefaultValue is true; every other boolean defaults to false.
_TRUE_BY_DEFAULT = frozenset({("contact", "followemail"), ("account", "followemail")})


def column_default(table: TableDef, col: ColumnDef) -> Any:
    """The value Dataverse gives a column that a create leaves out (None: no default).

    Documented in the table reference: a new row is Active (``statecode`` 0) with the default status
    reason of that state (``statuscode`` 1 on every table the snapshots carry), and a boolean column takes
    its ``DefaultValue`` (0 for the ``donot*`` columns, 1 for ``followemail``). Choice columns other than
    state and status stay null, as Dataverse leaves them when the form default is not sent.
    """
    if col.name == "statecode" and col.type == "choice":
        return 0
    if col.name == "statuscode" and col.type == "choice":
        return 1
    if col.type == "boolean" and col.published:
        return (table.name, col.name) in _TRUE_BY_DEFAULT
    return None


def _is_custom(name: str) -> bool:
    # Custom columns carry their publisher's prefix (new_, acs_, ...); system columns have no underscore prefix.
    prefix, sep, _rest = name.partition("_")
    return bool(sep) and bool(prefix) and prefix.isalnum()


# -- $metadata (CSDL) -------------------------------------------------------------------------------


def _nav_properties(table: TableDef, col: ColumnDef) -> list[tuple[str, str]]:
    """(navigation property name, target table) for a lookup, named the way Dataverse names them."""
    if col.name == "regardingobjectid":
        return [(f"regardingobjectid_{t}_{table.name}", t) for t in col.targets]
    if len(col.targets) > 1:
        return [(f"{col.name}_{t}", t) for t in col.targets]
    return [(col.name, t) for t in col.targets]


def navigation_name(table: TableDef, col: ColumnDef, target: str) -> str:
    """The single-valued navigation property of lookup ``col`` for a row of ``target``."""
    return next((nav for nav, t in _nav_properties(table, col) if t == target), col.name)


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

_EMPTY_LABEL: dict[str, Any] = {"LocalizedLabels": [], "UserLocalizedLabel": None}  # Dataverse's "no label"

# Metadata types a client may cast the Attributes collection to (the derived types of AttributeMetadata).
# EnumAttributeMetadata is the base of the option-set types; the rest are concrete.
KNOWN_CASTS = frozenset({
    "BigIntAttributeMetadata", "BooleanAttributeMetadata", "DateTimeAttributeMetadata", "DecimalAttributeMetadata",
    "DoubleAttributeMetadata", "EntityNameAttributeMetadata", "EnumAttributeMetadata", "FileAttributeMetadata",
    "ImageAttributeMetadata", "IntegerAttributeMetadata", "LookupAttributeMetadata",
    "ManagedPropertyAttributeMetadata", "MemoAttributeMetadata", "MoneyAttributeMetadata",
    "MultiSelectPicklistAttributeMetadata", "PicklistAttributeMetadata", "StateAttributeMetadata",
    "StatusAttributeMetadata", "StringAttributeMetadata", "UniqueIdentifierAttributeMetadata",
})
_ENUM_CASTS = frozenset({"PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata",
                         "MultiSelectPicklistAttributeMetadata", "EntityNameAttributeMetadata"})


def _label(text: str | None) -> dict[str, Any]:
    if not text:
        return dict(_EMPTY_LABEL)
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True,
                 "MetadataId": str(uuid.uuid5(_NS, "label:" + text)), "HasChanged": None}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def attribute_type(col: ColumnDef) -> tuple[str, str]:
    """(AttributeType, metadata type) of a column, as Dataverse reports its system columns."""
    if col.type == "choice" and col.name == "statecode":
        return "State", "StateAttributeMetadata"
    if col.type == "choice" and col.name == "statuscode":
        return "Status", "StatusAttributeMetadata"
    if col.type == "lookup" and col.name == "ownerid":
        return "Owner", "LookupAttributeMetadata"
    if col.type == "lookup" and set(col.targets) == {"account", "contact"}:
        return "Customer", "LookupAttributeMetadata"
    return ATTRIBUTE_TYPES.get(col.type, ("String", "StringAttributeMetadata"))


def attribute_metadata(table: TableDef, col: ColumnDef, *, expand_optionset: bool, column_number: int = 0) -> dict[str, Any]:
    attr_type, cast = attribute_type(col)
    is_pk = col.name == table.primary_key
    # The primary key may be given on create (Dataverse accepts a client-chosen id) but never changed.
    creatable = not col.read_only
    updatable = not col.read_only and not is_pk
    required = "SystemRequired" if is_pk else "ApplicationRequired" if col.required else "None"
    out: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{cast}",
        "LogicalName": col.name,
        "SchemaName": col.name,
        "MetadataId": str(uuid.uuid5(_NS, f"{table.name}.{col.name}")),
        "ColumnNumber": column_number,
        "AttributeType": attr_type,
        "AttributeTypeName": {"Value": "MultiSelectPicklistType" if col.type == "multichoice" else f"{attr_type}Type"},
        "AttributeOf": None,
        "EntityLogicalName": table.name,
        "IsPrimaryId": is_pk,
        "IsPrimaryName": col.name == table.primary_name,
        "IsValidForCreate": creatable,
        "IsValidForUpdate": updatable,
        "IsValidForRead": True,
        "DisplayName": _label(col.display_name),
        "Description": _label(None),
        "RequiredLevel": {"Value": required, "CanBeChanged": not is_pk,
                          "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"},
    }
    if col.max_length is not None and col.type in ("string", "memo", "enum"):
        out["MaxLength"] = col.max_length
    if col.type in ("datetime", "date"):
        date_only = col.type == "date"
        out["Format"] = "DateOnly" if date_only else "DateAndTime"
        out["DateTimeBehavior"] = {"Value": "DateOnly" if date_only else "UserLocal"}
    if col.type == "lookup":
        out["Targets"] = list(col.targets)
    if col.precision is not None and col.type in ("decimal", "money", "double"):
        out["Precision"] = col.precision
    if col.minimum is not None:
        out["MinValue"] = col.minimum
    if col.maximum is not None:
        out["MaxValue"] = col.maximum
    if col.type in ("choice", "multichoice") and expand_optionset:
        out["OptionSet"] = {
            "MetadataId": str(uuid.uuid5(_NS, f"optionset:{table.name}.{col.name}")),
            "Name": f"{table.name}_{col.name}",
            "IsGlobal": False,
            "OptionSetType": attr_type if attr_type in ("State", "Status") else "Picklist",
            "Options": [{"Value": v, "Label": _label(lbl), "Description": _label(None)} for v, lbl in col.options],
        }
    return out


def _cast_matches(col: ColumnDef, cast: str) -> bool:
    own = attribute_type(col)[1]
    return own == cast or (cast == "EnumAttributeMetadata" and own in _ENUM_CASTS)


def attributes_metadata(table: TableDef, cast: str | None, *, expand_optionset: bool) -> list[dict[str, Any]]:
    """Attribute metadata of ``table``'s published columns in column order, optionally only those of one
    metadata type (``PicklistAttributeMetadata``). An unknown type raises ``DataverseError``, as the service does."""
    if cast is not None and cast not in KNOWN_CASTS:
        raise DataverseError("segment_not_found", segment=f"Microsoft.Dynamics.CRM.{cast}")
    published = [c for c in table.columns if c.published]
    return [
        attribute_metadata(table, c, expand_optionset=expand_optionset, column_number=n)
        for n, c in enumerate(published, start=1)
        if cast is None or _cast_matches(c, cast)
    ]


def keys_metadata(table: TableDef) -> list[dict[str, Any]]:
    """EntityKeyMetadata of the table's alternate keys."""
    return [{"MetadataId": str(uuid.uuid5(_NS, f"key:{table.name}.{name}")), "LogicalName": name, "SchemaName": name,
             "EntityLogicalName": table.name, "KeyAttributes": list(columns), "EntityKeyIndexStatus": "Active",
             "DisplayName": _label(None)}
            for name, columns in table.alternate_keys]


_CASCADE_NAMES = {"cascade": "Cascade", "remove_link": "RemoveLink", None: "NoCascade"}


def _referenced_key(tables: Mapping[str, TableDef], name: str) -> str:
    # A table outside the snapshots (systemuser, team) keys on "<name>id", as every Dataverse table does.
    table = tables.get(name)
    return table.primary_key if table is not None else f"{name}id"


def relationships(tables: Mapping[str, TableDef]) -> list[dict[str, Any]]:
    """OneToManyRelationshipMetadata of every lookup in the snapshots (one per lookup and target table).

    The lookup and its targets are facts of the snapshots; the schema names follow the pattern Dataverse
    gives relationships made in the maker portal (``<referencing table>_<lookup>_<referenced table>``; the
    real names of system relationships differ) and the Delete cascade is ``delete_behaviour``'s. Both are
    assumptions, stated in docs/emulators.md."""
    out = []
    for table in tables.values():
        for col in table.columns:
            if col.type != "lookup":
                continue
            delete = _CASCADE_NAMES[delete_behaviour(table, col)]
            for nav, target in _nav_properties(table, col):
                schema = f"{table.name}_{col.name}_{target}"
                out.append({
                    "@odata.type": "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
                    "MetadataId": str(uuid.uuid5(_NS, f"relationship:{schema}")),
                    "SchemaName": schema,
                    "RelationshipType": "OneToManyRelationship",
                    "IsCustomRelationship": _is_custom(col.name),
                    "IsValidForAdvancedFind": True,
                    "SecurityTypes": "ParentChild" if delete == "Cascade" else "None",
                    "ReferencedAttribute": _referenced_key(tables, target),
                    "ReferencedEntity": target,
                    "ReferencingAttribute": col.name,
                    "ReferencingEntity": table.name,
                    "ReferencedEntityNavigationPropertyName": schema,
                    "ReferencingEntityNavigationPropertyName": nav,
                    "IsHierarchical": target == table.name,
                    "CascadeConfiguration": {"Assign": "NoCascade", "Delete": delete, "Merge": "NoCascade",
                                             "Reparent": "NoCascade", "Share": "NoCascade",
                                             "Unshare": "NoCascade", "RollupView": "NoCascade"},
                })
    return out


def relationships_of(tables: Mapping[str, TableDef], table: TableDef, segment: str) -> list[dict[str, Any]]:
    """The relationships an ``EntityDefinitions(...)/<segment>`` collection holds for ``table``: one-to-many
    where it is referenced, many-to-one where it holds the lookup; many-to-many: none (no snapshot has one)."""
    if segment == "OneToManyRelationships":
        return [r for r in relationships(tables) if r["ReferencedEntity"] == table.name]
    if segment == "ManyToOneRelationships":
        return [r for r in relationships(tables) if r["ReferencingEntity"] == table.name]
    return []


def schema_name(table: str) -> str:
    """A table's SchemaName: system tables' is the logical name with a capital first letter (``Contact``);
    custom ones keep the logical name (assumed: the maker portal keeps the case the maker typed)."""
    return table if "_" in table else table[:1].upper() + table[1:]


def entity_metadata(table: TableDef) -> dict[str, Any]:
    """The EntityMetadata properties of a table (without its Attributes and Keys collections)."""
    return {
        "MetadataId": str(uuid.uuid5(_NS, f"entity:{table.name}")),
        "LogicalName": table.name,
        "SchemaName": schema_name(table.name),
        "EntitySetName": table.entity_set,
        "LogicalCollectionName": table.entity_set,
        "DisplayName": _label(table.display_name),
        "Description": _label(None),
        "PrimaryIdAttribute": table.primary_key,
        "PrimaryNameAttribute": table.primary_name,
        "PrimaryImageAttribute": None,  # no snapshot has an image column
        "IsActivity": table.is_activity,
        "ChangeTrackingEnabled": table.change_tracking,
        "IsCustomEntity": "_" in table.name,  # custom tables carry their publisher's prefix
    }


def split_options(text: str) -> list[str]:
    """Split ``a,b($select=x,y),c`` at the top-level commas (nested query options stay whole)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return [item for item in items if item]


def _expansions(text: str) -> dict[str, dict[str, str]]:
    """``Attributes($select=LogicalName;$expand=OptionSet),Keys`` -> {name: {option: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in split_options(text):
        name, _, rest = item.partition("(")
        options: dict[str, str] = {}
        for part in rest.rstrip(")").split(";") if rest else ():
            key, _, value = part.partition("=")
            options[key.strip()] = value.strip()
        out[name.strip()] = options
    return out


def _selected(record: dict[str, Any], select: str | None, always: tuple[str, ...]) -> dict[str, Any]:
    if not select:
        return record
    keep = {s.strip() for s in select.split(",") if s.strip()} | set(always)
    return {k: v for k, v in record.items() if k in keep}


RELATIONSHIP_SEGMENTS = ("OneToManyRelationships", "ManyToOneRelationships", "ManyToManyRelationships")
COLLECTIONS = ("Attributes", "Keys", *RELATIONSHIP_SEGMENTS)


def _collection(tables: Mapping[str, TableDef], table: TableDef, segment: str, cast: str | None,
                options: Mapping[str, str], filter_params: Mapping[str, str]) -> list[dict[str, Any]]:
    """One of an entity's metadata collections with its query options (``$select``, ``$filter``, ``$expand``)."""
    if segment == "Attributes":
        inner = _expansions(options.get("$expand", ""))
        records = attributes_metadata(table, cast, expand_optionset="OptionSet" in inner or "GlobalOptionSet" in inner)
        always: tuple[str, ...] = ("@odata.type", "MetadataId", "OptionSet")
    elif segment == "Keys":
        records, always = keys_metadata(table), ("MetadataId",)
    else:
        records, always = relationships_of(tables, table, segment), ("@odata.type", "MetadataId")
    picked = query_records(records, {k: v for k, v in options.items() if k in ("$filter", "$orderby", "$top")},
                           filter_params=filter_params)
    return [_selected(r, options.get("$select"), always) for r in picked]


def definitions_reply(tables: Mapping[str, TableDef], table: TableDef, segment: str | None, cast: str | None,
                      params: Mapping[str, str], api: str, *, attribute: str | None = None) -> dict[str, Any]:
    """The body of ``GET EntityDefinitions(LogicalName='x')[/<collection>[(LogicalName='a')][/<cast>]]``."""
    expand = _expansions(params.get("$expand", ""))
    if segment is not None and segment not in COLLECTIONS:
        raise DataverseError("segment_not_found", segment=segment)
    if segment is not None:
        suffix = f"/Microsoft.Dynamics.CRM.{cast}" if cast else ""
        context = f"{api}/$metadata#EntityDefinitions('{table.name}')/{segment}{suffix}"
        if attribute is not None:
            found = [a for a in _collection(tables, table, segment, cast, params, params) if a["LogicalName"] == attribute]
            if not found:
                raise DataverseError("not_found", table="AttributeMetadata", id=attribute)
            return {"@odata.context": f"{context}/$entity", **found[0]}
        return {"@odata.context": context, "value": _collection(tables, table, segment, cast, params, params)}
    body: dict[str, Any] = {"@odata.context": f"{api}/$metadata#EntityDefinitions/$entity"}
    body.update(_selected(entity_metadata(table), params.get("$select"), ("MetadataId",)))
    for name, options in expand.items():
        if name not in COLLECTIONS:
            raise DataverseError("no_property", name=name, table="EntityMetadata")
        body[name] = _collection(tables, table, name, None, options, params)
    return body


def definitions_list(tables: Mapping[str, TableDef], params: Mapping[str, str], api: str) -> dict[str, Any]:
    """``GET EntityDefinitions`` with ``$select``/``$filter`` (e.g. ``ChangeTrackingEnabled eq true``)."""
    records = query_records([entity_metadata(t) for t in tables.values()], params)
    select = params.get("$select")
    columns = f"({select})" if select else ""
    return {"@odata.context": f"{api}/$metadata#EntityDefinitions{columns}",
            "value": [_selected(r, select, ("MetadataId",)) for r in records]}


def _attributes(table: TableDef, cast: str | None, select: str | None, optionset: bool) -> list[dict[str, Any]]:
    attrs = attributes_metadata(table, cast, expand_optionset=optionset)
    return [_selected(a, select, ("@odata.type", "MetadataId", "OptionSet")) for a in attrs]


def xml_attr(value: str) -> str:
    return quoteattr(value)
