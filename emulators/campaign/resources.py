"""Campaign resources as the schema snapshots describe them, and validation of a write against them.

The emulator reads ``schemas/snapshots/campaign/*.json`` directly (the format is fixed by
``schemas/snapshot.schema.json``) so that the API it serves is exactly the one the checker knows:
field names, types, lengths, enumerations, links and custom filters. Event feeds (``events.*``) are
not REST resources and are skipped here; the journal owns them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from mapsync.emulators.campaign.errors import CampaignApiError

__all__ = ["SNAPSHOT_DIR", "FieldSpec", "FilterSpec", "ResourceSpec", "load_resources"]

SNAPSHOT_DIR = Path(__file__).resolve().parents[2] / "schemas" / "snapshots" / "campaign"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})?$")
# Fields Campaign computes itself; never taken from a request.
COMPUTED = frozenset({"PKey", "href", "created", "lastModified", "createdBy", "lastModifiedBy"})


# -- resourceType metadata ----------------------------------------------------------------------------
# What Adobe documents ("Metadata mechanism", Campaign Standard API): GET <ns>/resourceType/<name> returns
# the resource's "name", "label", "data" (its path), "filters": {"href": <url of its filter list>} and a
# "content" node of fields, each with "apiName", "label", "type" (the high-level type: string, number,
# link, enumeration, ...), "resType" (the technical type), "resTarget" for links and "values" for
# enumerations; the filter list maps each filter name to its metadata, whose "data" is the call with
# "$value" placeholders (".../byText?text=$value"). NOT documented, so ASSUMED here and only here:
# - the technical type names in "resType" (Campaign's schema types: string, memo, long, int64, double,
#   boolean, date, datetime) and "number" as the high-level type of the numeric ones;
# - a nested element (profile.location) as "type": "item" with its own "content", like the resource;
# - "length" (string length), "mandatory" and "readOnly" on every field;
# - "values" of an enumeration as the list of its API values (the labels are not needed here);
# - a custom filter's "data" naming its parameters "<name>_parameter" (how they are called, PROTOCOLS §4).
_WIRE_TYPES = {
    "string": ("string", "string"), "memo": ("string", "memo"), "integer": ("number", "long"),
    "bigint": ("number", "int64"), "double": ("number", "double"), "decimal": ("number", "decimal"),
    "money": ("number", "decimal"), "boolean": ("boolean", "boolean"), "date": ("date", "date"),
    "datetime": ("datetime", "datetime"), "enum": ("enumeration", "string"), "lookup": ("link", "link"),
    "object": ("item", "item"),
}
BUILT_IN_FILTERS = {"byEmail": "By email", "byText": "By name or email"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str
    max_length: int | None = None
    values: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    read_only: bool = False
    required: bool = False
    fields: tuple[FieldSpec, ...] = ()
    display_name: str | None = None

    @property
    def is_custom(self) -> bool:
        """Extension fields (``cus*``) exist only on the profileAndServicesExt view."""
        return self.name.startswith("cus")

    def describe(self) -> dict[str, Any]:
        """This field as ``resourceType`` metadata shows it (see the assumptions above)."""
        kind, res_type = _WIRE_TYPES.get(self.type, (self.type, self.type))
        out: dict[str, Any] = {"apiName": self.name, "label": self.display_name or self.name, "type": kind,
                               "resType": res_type}
        if self.max_length is not None:
            out["length"] = self.max_length
        out["mandatory"] = self.required
        out["readOnly"] = self.read_only
        if self.values:
            out["values"] = list(self.values)
        if self.targets:
            out["resTarget"] = self.targets[0]
        if self.fields:
            out["content"] = {f.name: f.describe() for f in self.fields}
        return out


@dataclass(frozen=True, slots=True)
class FilterSpec:
    name: str  # byEmail, byText, by<Field>
    params: tuple[str, ...]  # query parameter names
    fields: tuple[str, ...]  # the fields compared (byText: several)
    contains: bool = False  # byText searches, the others match exactly
    declared: tuple[str, ...] = ()  # the parameters as the snapshot lists them (metadata shows these)

    def describe(self, namespace: str, resource: str, pkey: str) -> dict[str, Any]:
        """This filter as the resource's filter list shows it: ``data`` is the call with ``$value`` placeholders."""
        custom = self.name not in BUILT_IN_FILTERS
        params = self.declared or self.params[:1]
        query = "&".join(f"{p}{'_parameter' if custom else ''}=$value" for p in params)
        return {"PKey": pkey, "label": BUILT_IN_FILTERS.get(self.name, f"By {', '.join(params)}"),
                "category": "99_none", "formType": "none", "fragmentName": "",
                "data": f"/{namespace}/{resource}/{self.name}?{query}"}


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    path: str | None  # e.g. profileAndServices/profile
    ext_path: str | None  # e.g. profileAndServicesExt/profile
    fields: dict[str, FieldSpec]
    filters: dict[str, FilterSpec] = field(default_factory=dict)
    display_name: str | None = None

    def in_namespace(self, namespace: str) -> str | None:
        """This resource's path in ``profileAndServices`` or ``profileAndServicesExt``, None when it has none there."""
        for path in (self.path, self.ext_path):
            if path is not None and path.split("/", 1)[0] == namespace:
                return path
        return None

    def resource_type(self, namespace: str, base: str) -> dict[str, Any]:
        """``GET <namespace>/resourceType/<name>``: the resource's metadata (see the assumptions above)."""
        path = self.in_namespace(namespace)
        pkey = self.metadata_pkey
        return {
            "PKey": pkey,
            "name": self.name,
            "label": self.display_name or self.name,
            "help": self.display_name or self.name,
            "type": "item",
            "mandatory": False,
            "readOnly": False,
            "pkgStatus": "never",
            "data": f"/{path}/",
            "href": f"{base}/{path}/metadata",
            "filters": {"href": f"{base}/{namespace}/resourceType/{pkey}/filters/"},
            "content": {k: f.describe() for k, f in self.visible(namespace == "profileAndServicesExt").items()},
        }

    def filters_metadata(self, namespace: str) -> dict[str, Any]:
        """``GET <namespace>/resourceType/<PKey>/filters``: every filter of the resource, by name."""
        return {name: flt.describe(namespace, self.name, f"{self.metadata_pkey}-{name}")
                for name, flt in self.filters.items()}

    @property
    def metadata_pkey(self) -> str:
        """The opaque PKey of the resource's metadata record (Campaign's are ``@`` + base64)."""
        return "@" + base64.urlsafe_b64encode(f"resourceType:{self.name}".encode()).decode().rstrip("=")

    def visible(self, ext: bool) -> dict[str, FieldSpec]:
        return self.fields if ext else {k: f for k, f in self.fields.items() if not f.is_custom}

    @property
    def links(self) -> dict[str, FieldSpec]:
        return {k: f for k, f in self.fields.items() if f.type == "lookup"}

    @property
    def index_fields(self) -> tuple[str, ...]:
        """Fields kept in their own column: those filters compare, and links (for integrity)."""
        names = {f for flt in self.filters.values() for f in flt.fields} | set(self.links)
        return tuple(sorted(n for n in names if n in self.fields))

    def validate(self, payload: Any, *, ext: bool, partial: bool, link_exists: Any) -> dict[str, Any]:
        """Check a create (``partial=False``) or update body; return the fields to store.

        ``link_exists(target_resource, pkey) -> bool`` checks links such as ``cusProfile: {"PKey": ...}``.
        """
        if not isinstance(payload, Mapping):
            raise CampaignApiError("bad_json")
        visible = self.visible(ext)
        out: dict[str, Any] = {}
        for name, value in payload.items():
            if name in COMPUTED:
                continue
            spec = visible.get(name)
            if spec is None:
                raise CampaignApiError("unknown_field", f"'{name}' on resource '{self.name}'")
            if spec.read_only:
                continue
            out[name] = _check(spec, value, f"{self.name}.{name}", link_exists)
        if not partial:
            for name, spec in visible.items():
                if spec.required and not spec.read_only and out.get(name) in (None, ""):
                    raise CampaignApiError("required", f"'{name}' on resource '{self.name}'")
        return out


def _check(spec: FieldSpec, value: Any, where: str, link_exists: Any) -> Any:
    if value is None:
        if spec.required:
            raise CampaignApiError("required", where)
        return None
    kind = spec.type
    if kind in ("string", "memo"):
        if not isinstance(value, str):
            raise CampaignApiError("bad_type", f"{where} expects a string")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise CampaignApiError("too_long", f"{where} is {len(value)} characters, the maximum is {spec.max_length}")
        return value
    if kind == "enum":
        if value not in spec.values:
            raise CampaignApiError("bad_enum", f"{where} '{value}' is not one of {', '.join(spec.values)}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise CampaignApiError("bad_type", f"{where} expects true or false")
        return value
    if kind in ("integer", "bigint"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CampaignApiError("bad_type", f"{where} expects an integer")
        return value
    if kind in ("decimal", "double", "money"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CampaignApiError("bad_type", f"{where} expects a number")
        return value
    if kind == "date":
        if not isinstance(value, str) or not _DATE.match(value) or not _valid_date(value):
            raise CampaignApiError("bad_date", f"{where} expects YYYY-MM-DD")
        return value
    if kind == "datetime":
        if not isinstance(value, str) or not _DATETIME.match(value) or not _valid_date(value[:10]):
            raise CampaignApiError("bad_date", f"{where} expects 'YYYY-MM-DD HH:MM:SS.000Z'")
        return value
    if kind == "object":
        if not isinstance(value, Mapping):
            raise CampaignApiError("bad_type", f"{where} expects an object")
        inner = {f.name: f for f in spec.fields}
        out: dict[str, Any] = {}
        for name, sub in value.items():
            if name not in inner:
                raise CampaignApiError("unknown_field", f"'{name}' in {where}")
            out[name] = _check(inner[name], sub, f"{where}.{name}", link_exists)
        return out
    if kind == "lookup":
        pkey = value.get("PKey") if isinstance(value, Mapping) else None
        if not isinstance(pkey, str):
            raise CampaignApiError("bad_type", f"{where} expects {{\"PKey\": \"...\"}}")
        target = spec.targets[0] if spec.targets else ""
        if not link_exists(target, pkey):
            raise CampaignApiError("bad_link", f"{where} points at {target} '{pkey}', which does not exist")
        return {"PKey": pkey}
    return value  # guid, choice and others pass through unchecked


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _field(name: str, raw: Mapping[str, Any]) -> FieldSpec:
    return FieldSpec(
        name=name,
        type=str(raw["type"]),
        max_length=raw.get("max_length"),
        values=tuple(raw.get("values", ())),
        targets=tuple(raw.get("targets", ())),
        read_only=bool(raw.get("read_only", False)),
        required=bool(raw.get("required", False)),
        fields=tuple(_field(k, v) for k, v in raw.get("fields", {}).items()),
        display_name=raw.get("display_name"),
    )


def _filters(raw: Mapping[str, list[str]], fields: Mapping[str, FieldSpec]) -> dict[str, FilterSpec]:
    """Snapshot filters -> how to evaluate them.

    ``byText`` searches email, first and last name. Any other filter compares one field: the one its
    parameter names (``"byExternalId": ["cusExternalId"]``), else the one its name names. Custom filters
    are called with ``<param>_parameter=`` (PROTOCOLS.md §4); the bare ``<param>=`` is accepted as well.
    """
    lowered = {k.lower(): k for k in fields}
    out: dict[str, FilterSpec] = {}
    for name, params in raw.items():
        if name == "byText":
            text_fields = tuple(f for f in ("email", "firstName", "lastName") if f in fields)
            out[name] = FilterSpec(name, tuple(params) or ("text",), text_fields, contains=True,
                                   declared=tuple(params) or ("text",))
            continue
        candidates = [p.removesuffix("_parameter") for p in params] + [name[2:], "cus" + name[2:]]
        field_name = next((lowered[c.lower()] for c in candidates if c.lower() in lowered), None)
        if field_name is None:  # a filter over a field the snapshot does not list: not served
            continue
        base = tuple(p.removesuffix("_parameter") for p in params) or (field_name,)
        accepted = base if name == "byEmail" else tuple(f"{p}_parameter" for p in base) + base
        out[name] = FilterSpec(name, accepted, (field_name,), declared=base)
    return out


def load_resources(directory: Path = SNAPSHOT_DIR) -> dict[str, ResourceSpec]:
    """Every REST resource of the Campaign snapshots, by resource name."""
    out: dict[str, ResourceSpec] = {}
    for path in sorted(directory.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("system") != "campaign" or "feed" in raw or "." in raw["name"]:
            continue
        fields = {k: _field(k, v) for k, v in raw["fields"].items()}
        out[raw["name"]] = ResourceSpec(
            name=raw["name"],
            path=raw.get("path"),
            ext_path=raw.get("ext_path"),
            fields=fields,
            filters=_filters(raw.get("filters", {}), fields),
            display_name=raw.get("display_name"),
        )
    return out


def campaign_datetime(moment: datetime) -> str:
    """Campaign's wire format for dates with time: ``2019-09-25 23:20:35.000Z`` (UTC)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
