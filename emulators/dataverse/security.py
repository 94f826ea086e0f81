"""The application user the emulated org knows, the privileges its role gives, and the switches that break them.

Dataverse admits a client-credentials caller only through an *application user* (a ``systemuser`` row whose
``applicationid`` is the app registration's client id, ``accessmode`` 4, non-interactive), and lets it do what
its security roles' privileges allow. The emulator has one such user, whose id is the ``UserId`` ``WhoAmI``
answers, with a role holding every privilege on every table at Organization (``Global``) depth, unless a setup
switch (``PUT /_emulator/setup``, docs/emulators.md) says otherwise:

- ``application_user``: ``"enabled"`` (default), ``"disabled"`` or ``"missing"``; a disabled or missing user
  is refused on every Web API call (403, see ``errors.py``), as Dataverse refuses a user it does not admit;
- removed privileges: the role lacks them; ``RetrieveUserPrivileges`` leaves them out and a request that
  needs one is refused with ``0x80040220`` (Read for GET, Create for POST, Write for PATCH, Delete for DELETE);
- change tracking per table (``ChangeTrackingEnabled`` and the tracked reads follow it);
- the ``EntityKeyIndexStatus`` of an alternate key (``Pending``, ``InProgress``, ``Active``, ``Failed``): only
  the metadata shows it; writes do not depend on it (assumed: no public source says what a write does then);
- SDK messages a table lacks (``"acs_emailsend:CreateMultiple"``): left out of ``sdkmessagefilters`` and refused;
- rows a synchronous plug-in refuses: a create or update of ``table`` whose values include a planted one fails
  (``0x80040265``), in a ``$batch`` part alone, in a bulk request with every row of the request.

Privilege names follow Dataverse's ``prv<Access><SchemaName>`` (``prvReadContact``); system tables' schema
names are the logical name with a capital first letter, custom ones (with a publisher prefix) keep theirs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mapsync.emulators.dataverse.metadata import TableDef, schema_name

__all__ = [
    "ACCESS_RIGHTS",
    "APPLICATION_USER_STATES",
    "KEY_STATUSES",
    "DataverseSetup",
    "privilege_name",
    "system_user",
    "user_privileges",
]

ACCESS_RIGHTS = ("Create", "Read", "Write", "Delete", "Append", "AppendTo", "Assign", "Share")
APPLICATION_USER_STATES = ("enabled", "disabled", "missing")
KEY_STATUSES = ("Pending", "InProgress", "Active", "Failed")  # the EntityKeyIndexStatus enum
ACCESS_MODE_NON_INTERACTIVE = 4
_NS = uuid.UUID("5f0c3a52-94d1-4c43-9a0e-2f4be8d1c9a7")
USER_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "user"))  # WhoAmI's UserId
BUSINESS_UNIT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "bu"))  # WhoAmI's BusinessUnitId


def privilege_name(access: str, table: str) -> str:
    return f"prv{access}{schema_name(table)}"


@dataclass
class DataverseSetup:
    """What the setup switches changed on the Dataverse side (mutable: the control endpoint changes it)."""

    application_user: str = "enabled"
    removed_privileges: set[str] = field(default_factory=set)  # lower-cased privilege names
    change_tracking: dict[str, bool] = field(default_factory=dict)  # table -> overridden ChangeTrackingEnabled
    key_status: dict[str, str] = field(default_factory=dict)  # "table:key" -> EntityKeyIndexStatus
    removed_messages: set[str] = field(default_factory=set)  # "table:Message" the table does not support
    rejected_rows: dict[str, set[str]] = field(default_factory=dict)  # table -> values a plug-in refuses

    def reset(self) -> None:
        self.application_user = "enabled"
        self.removed_privileges.clear()
        self.change_tracking.clear()
        self.key_status.clear()
        self.removed_messages.clear()
        self.rejected_rows.clear()

    def supports(self, table: str, message: str) -> bool:
        return f"{table}:{message}" not in self.removed_messages

    def refused(self, table: str, values: Iterable[Any]) -> str | None:
        """The planted value among ``values`` that makes a plug-in refuse this row of ``table``, or None."""
        planted = self.rejected_rows.get(table)
        if not planted:
            return None
        return next((v for v in values if isinstance(v, str) and v in planted), None)

    def has(self, privilege: str) -> bool:
        return privilege.lower() not in self.removed_privileges

    def applied(self, table: TableDef) -> TableDef:
        """``table`` as the switches make it look (change tracking overridden)."""
        tracking = self.change_tracking.get(table.name)
        return table if tracking is None or tracking == table.change_tracking else replace(table, change_tracking=tracking)

    def tables(self, tables: Mapping[str, TableDef]) -> Mapping[str, TableDef]:
        if not self.change_tracking:
            return tables
        return {name: self.applied(t) for name, t in tables.items()}

    def patch_keys(self, table: str, keys: Iterable[dict[str, Any]]) -> None:
        """Set the ``EntityKeyIndexStatus`` the switches give the keys of ``table`` (in place)."""
        for key in keys:
            status = self.key_status.get(f"{table}:{key.get('LogicalName')}")
            if status is not None and "EntityKeyIndexStatus" in key:
                key["EntityKeyIndexStatus"] = status

    def as_dict(self) -> dict[str, Any]:
        return {"application_user": self.application_user, "privileges_removed": sorted(self.removed_privileges),
                "change_tracking": dict(sorted(self.change_tracking.items())),
                "key_status": dict(sorted(self.key_status.items())),
                "messages_removed": sorted(self.removed_messages),
                "reject_rows": {t: sorted(v) for t, v in sorted(self.rejected_rows.items())}}


def system_user(api: str, client_id: str, setup: DataverseSetup, select: str | None) -> dict[str, Any]:
    """The application user's ``systemusers`` row (the columns a client checks; assumed: real rows hold ~150)."""
    row: dict[str, Any] = {
        "@odata.etag": 'W/"1"',
        "systemuserid": USER_ID,
        "fullname": "# mapsync",
        "applicationid": client_id,
        "azureactivedirectoryobjectid": str(uuid.uuid5(_NS, f"sp:{client_id}")),
        "isdisabled": setup.application_user == "disabled",
        "accessmode": ACCESS_MODE_NON_INTERACTIVE,
        "_businessunitid_value": BUSINESS_UNIT_ID,
    }
    if select:
        names = {n.strip() for n in select.split(",") if n.strip()}
        row = {k: v for k, v in row.items() if k in names or k in ("@odata.etag", "systemuserid")}
    return {"@odata.context": f"{api}/$metadata#systemusers/$entity", **row}


def user_privileges(api: str, tables: Iterable[str], setup: DataverseSetup) -> dict[str, Any]:
    """``RetrieveUserPrivilegesResponse``: a ``RolePrivileges`` collection of ``RolePrivilege`` (BusinessUnitId,
    Depth as the ``PrivilegeDepth`` member name, PrivilegeId, PrivilegeName), as Microsoft's reference types it."""
    privileges = [privilege_name(access, table) for table in sorted(tables) for access in ACCESS_RIGHTS]
    return {
        "@odata.context": f"{api}/$metadata#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse",
        "RolePrivileges": [{"BusinessUnitId": BUSINESS_UNIT_ID, "Depth": "Global",
                            "PrivilegeId": str(uuid.uuid5(_NS, name.lower())), "PrivilegeName": name}
                           for name in privileges if setup.has(name)],
    }


def privilege_count(tables: Iterable[str], setup: DataverseSetup) -> int:
    return sum(1 for t in tables for a in ACCESS_RIGHTS if setup.has(privilege_name(a, t)))
