"""Where a flow's records go: how a resolved reference is written, and how a record is found again.

Both systems express "this field points at that record" differently: Campaign nests ``{"PKey": ...}``,
Dataverse binds a navigation property (``regardingobjectid_contact_acs_emailsend@odata.bind``). The
executor resolves references to target ids; this module turns them into each system's wire form.

Finding a record again: Campaign has no idempotent create, so before creating the executor asks the
target whether it already holds a record with the flow's key (``find``, or ``existing`` for every record at
once). A lookup that fails raises ``ConnectorError``: "could not ask" is never taken for "not there".
Dataverse targets are written by id or alternate key, so their creates are idempotent and need no lookup;
``find`` serves ``mode update``, which writes only the rows the target already has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from mapsync.dsl.schema import TableSchema
from mapsync.engine.connectors.base import WriteOp, WriteOutcome
from mapsync.engine.errors import ConfigError

__all__ = ["CampaignTarget", "D365Target", "Target", "target_for"]


class Target(Protocol):
    system: str
    table: str
    # True: a create is not idempotent, so the executor looks records up by key before creating them.
    looks_up_creates: bool

    def reference(self, payload: dict[str, Any], path: str, ref_table: str, target_id: str) -> None: ...

    async def write(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]: ...

    async def find(self, key_field: str, key: str) -> str | None:
        """The id of the record whose ``key_field`` is ``key``; None when there is none. Raises
        ``ConnectorError`` when the target could not be asked."""
        ...

    def existing(self, key_field: str) -> AsyncIterator[list[tuple[str, str]]]:
        """``(key, target id)`` of every record that has a ``key_field``, page by page."""
        ...


def _set_path(payload: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = payload
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


class CampaignTarget:
    system = "campaign"
    looks_up_creates = True

    def __init__(self, connector: Any, table: str) -> None:
        self.connector = connector
        self.table = table

    def reference(self, payload: dict[str, Any], path: str, ref_table: str, target_id: str) -> None:
        _set_path(payload, path, {"PKey": target_id})

    async def write(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        return await self.connector.write(ops)

    async def find(self, key_field: str, key: str) -> str | None:
        rows = await self.connector.find(self.table, key_field, key)  # a failed lookup raises: never "not found"
        return str(rows[0]["PKey"]) if rows and rows[0].get("PKey") else None

    def existing(self, key_field: str) -> AsyncIterator[list[tuple[str, str]]]:
        return self.connector.keys(self.table, key_field)


class D365Target:
    system = "d365"
    looks_up_creates = False

    def __init__(self, connector: Any, table: str, schema: TableSchema | None) -> None:
        self.connector = connector
        self.table = table
        self.schema = schema

    def reference(self, payload: dict[str, Any], path: str, ref_table: str, target_id: str) -> None:
        ref_schema = self.connector.table(ref_table)
        entity_set = ref_schema.entity_set if ref_schema and ref_schema.entity_set else f"{ref_table}s"
        field = self.schema.fields.get(path) if self.schema else None
        targets = field.targets if field is not None else ()
        if self.schema is not None and self.schema.is_activity and path == "regardingobjectid":
            # Activities bind the regarding lookup per target table: Dataverse names the navigation property
            # regardingobjectid_<target>_<activity> (as in the batch examples' regardingobjectid_account_task).
            name = f"regardingobjectid_{ref_table}_{self.table}"
        elif len(targets) > 1:
            name = f"{path}_{ref_table}"
        else:
            name = path
        payload.pop(path, None)
        payload[f"{name}@odata.bind"] = f"/{entity_set}({target_id})"

    async def write(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        return await self.connector.write(ops)

    async def find(self, key_field: str, key: str) -> str | None:
        # Creates need no lookup (they are written by alternate key); `mode update` finds the rows to update.
        return await self.connector.find(self.table, key_field, key)

    async def existing(self, key_field: str) -> AsyncIterator[list[tuple[str, str]]]:
        return
        yield  # an async generator that yields nothing: creates by alternate key never duplicate


def target_for(flow: Any, connectors: Any) -> Target:
    system, table = flow.target.system, flow.target.name
    if system == "campaign":
        if connectors.campaign is None:
            raise ConfigError(f"flow {flow.name} writes to Campaign, but the environment has no `campaign` settings",
                              setting="campaign")
        return CampaignTarget(connectors.campaign, table)
    if system == "d365":
        if connectors.d365 is None:
            raise ConfigError(f"flow {flow.name} writes to Dynamics 365, but the environment has no `d365` settings",
                              setting="d365")
        return D365Target(connectors.d365, table, connectors.d365.table(table))
    raise ConfigError(f"flow {flow.name}: writing to {system}.{table} is not supported", setting="mappings")
