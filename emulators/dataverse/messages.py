"""The SDK message tables a client reads to learn which operations a table supports: ``sdkmessages`` and
``sdkmessagefilters`` (one filter per message and table, ``primaryobjecttypecode`` naming the table).

Microsoft documents the query a client sends ("Table operations: detect whether a message is available"):
``sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name eq @message and
primaryobjecttypecode eq @table&@message='CreateMultiple'&@table='account'`` answers one filter when the table
supports the message and an empty ``value`` when it does not; with ``$expand=sdkmessageid($select=name)`` each
filter carries its message. The rows here list exactly what the emulator serves: the single-record messages
and the bulk messages ``CreateMultiple``, ``UpdateMultiple`` and ``UpsertMultiple`` (``bulk.py``) for every table,
the unbound ``WhoAmI`` and ``RetrieveTotalRecordCount`` (``primaryobjecttypecode`` 'none'), and ``Retrieve`` and
``RetrieveUserPrivileges`` of the application user's ``systemuser`` row (``security.py``). Microsoft says many
standard tables support the bulk messages but not all; the emulator assumes every table of the snapshots does,
unless the setup switch ``messages`` removes one (then its filter is gone and the action refused).
``DeleteMultiple`` is for elastic tables only and is not listed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from mapsync.emulators.dataverse.bulk import BULK_MESSAGES
from mapsync.emulators.dataverse.errors import DataverseError
from mapsync.emulators.dataverse.metadata import TableDef, split_options
from mapsync.emulators.dataverse.records import Record, query_records

__all__ = ["MESSAGE_SETS", "message_reply"]

_NS = uuid.UUID("0b7e59a2-4c4e-4b55-9d0e-736466b6d657")
TABLE_MESSAGES = ("Create", "Delete", "Retrieve", "RetrieveMultiple", "Update", "Upsert", *BULK_MESSAGES)
UNBOUND_MESSAGES = ("RetrieveTotalRecordCount", "WhoAmI")
# The application user's row and privileges (security.py): messages of the systemuser table.
SYSTEM_USER_MESSAGES = ("Retrieve", "RetrieveUserPrivileges")
MESSAGE_SETS = {"sdkmessages": "sdkmessage", "sdkmessagefilters": "sdkmessagefilter"}
_FILTERS_OF_MESSAGE = "sdkmessageid_sdkmessagefilter"  # collection-valued navigation, message -> filters


def _message_id(name: str) -> str:
    return str(uuid.uuid5(_NS, "message:" + name))


def _messages() -> list[Record]:
    return [{"@odata.etag": 'W/"1"', "name": name, "isprivate": False, "isactive": True,
             "sdkmessageid": _message_id(name)} for name in sorted(set(TABLE_MESSAGES + UNBOUND_MESSAGES + SYSTEM_USER_MESSAGES))]


def _filters(tables: Mapping[str, TableDef], supports: Callable[[str, str], bool]) -> list[Record]:
    pairs = [(m, t) for t in sorted(tables) for m in TABLE_MESSAGES if supports(t, m)]
    pairs += [(m, "none") for m in UNBOUND_MESSAGES]
    pairs += [(m, "systemuser") for m in SYSTEM_USER_MESSAGES if "systemuser" not in tables]
    return [{"@odata.etag": 'W/"1"', "primaryobjecttypecode": table, "secondaryobjecttypecode": "none",
             "iscustomprocessingstepallowed": True, "isvisible": True,
             "_sdkmessageid_value": _message_id(message),
             "sdkmessagefilterid": str(uuid.uuid5(_NS, f"filter:{message}:{table}"))} for message, table in pairs]


def _select(record: Record, select: str | None, key: str, entity: str) -> Record:
    if not select:
        return dict(record)
    names = [n.strip() for n in select.split(",") if n.strip()]
    for n in names:
        if n not in record:
            raise DataverseError("no_property", name=n, table=entity)
    return {k: v for k, v in record.items() if k in names or k in ("@odata.etag", key)}


def _expand_options(text: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in split_options(text):
        name, _, rest = item.partition("(")
        options = {}
        for part in rest.rstrip(")").split(";") if rest else ():
            k, _, v = part.partition("=")
            options[k.strip()] = v.strip()
        out[name.strip()] = options
    return out


def message_reply(entity_set: str, params: Mapping[str, str], tables: Mapping[str, TableDef], api: str,
                  supports: Callable[[str, str], bool] = lambda table, message: True) -> dict[str, Any]:
    """The body of ``GET sdkmessages`` or ``GET sdkmessagefilters`` with its query options; ``supports(table,
    message)`` False leaves that filter out (a table without the message)."""
    messages, filters = _messages(), _filters(tables, supports)
    by_id = {m["sdkmessageid"]: m for m in messages}
    expand = _expand_options(params.get("$expand", ""))
    if entity_set == "sdkmessagefilters":
        rows = [{**f, "sdkmessageid": by_id[f["_sdkmessageid_value"]]} for f in filters]  # for sdkmessageid/name
        allowed, key, entity = {"sdkmessageid"}, "sdkmessagefilterid", "sdkmessagefilter"
    else:
        rows = [{**m, _FILTERS_OF_MESSAGE: [f for f in filters if f["_sdkmessageid_value"] == m["sdkmessageid"]]}
                for m in messages]
        allowed, key, entity = {_FILTERS_OF_MESSAGE}, "sdkmessageid", "sdkmessage"
    for name in expand:
        if name not in allowed:
            raise DataverseError("no_property", name=name, table=entity)
    found = query_records(rows, params)
    out = []
    for row in found:
        plain = {k: v for k, v in row.items() if k not in allowed}
        item = _select(plain, params.get("$select"), key, entity)
        for name, options in expand.items():
            inner_key = "sdkmessageid" if name == "sdkmessageid" else "sdkmessagefilterid"
            inner_entity = "sdkmessage" if name == "sdkmessageid" else "sdkmessagefilter"
            value = row[name]
            if isinstance(value, list):
                picked = query_records(value, options, filter_params=params)
                item[name] = [_strip(_select(v, options.get("$select"), inner_key, inner_entity)) for v in picked]
            else:
                item[name] = _strip(_select(value, options.get("$select"), inner_key, inner_entity))
        out.append(item)
    return {"@odata.context": f"{api}/$metadata#{entity_set}{_context_columns(params, expand)}", "value": out}


def _strip(record: Record) -> Record:
    # An expanded record carries no etag of its own in Microsoft's example, and its key comes last.
    return {k: v for k, v in record.items() if k != "@odata.etag"}


def _context_columns(params: Mapping[str, str], expand: Mapping[str, Mapping[str, str]]) -> str:
    cols = [c.strip() for c in params.get("$select", "").split(",") if c.strip()]
    for name, options in expand.items():
        cols.append(f"{name}({options['$select']})" if options.get("$select") else f"{name}()")
    return f"({','.join(cols)})" if cols else ""
