"""The bulk operation messages of standard tables: ``CreateMultiple``, ``UpdateMultiple`` and ``UpsertMultiple``,
bound to a table's entity set (``POST <entityset>/Microsoft.Dynamics.CRM.CreateMultiple``).

Microsoft documents ("Use bulk operation messages", "UpsertMultiple Action"):

- the body is ``{"Targets": [...]}``, every target carrying ``@odata.type`` ``Microsoft.Dynamics.CRM.<table>``;
- ``CreateMultiple`` answers 200 with a ``CreateMultipleResponse`` (``{"@odata.context", "Ids": [...]}``, the
  new ids in the order of the targets); ``UpdateMultiple`` and ``UpsertMultiple`` answer 204 No Content;
- ``UpsertMultiple`` names each record by ``@odata.id``, a relative URL with its alternate key
  (``sample_examples(sample_keyattribute='0000001')``); ``UpdateMultiple`` by the primary key in the target;
- on a standard table the request is one transaction: any row that fails rolls every row back;
- a bulk request counts as one request against the service-protection limits, and its execution time counts.

What Microsoft does not document, and is assumed here (docs/emulators.md, "Assumptions"):

- the error of a failed bulk request is the failing row's own error (status, code, message), as a single
  ``Create``/``Update`` of that row would answer it; it does not say which target failed;
- a target of ``UpsertMultiple`` without ``@odata.id`` is matched by an alternate key whose columns it carries
  (the Web API's form of the SDK's ``KeyAttributes``), else by its primary key, else created;
- a table without the message (removed by a setup switch) is refused with ``0x80040800``;
- ``BULK_ROW_EXECUTION_MS`` of execution time per target, on top of the request's own, is charged to the
  service-protection window: the emulator's in-memory writes take far less time than a real database's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mapsync.emulators.dataverse.errors import DataverseError
from mapsync.emulators.dataverse.metadata import TableDef

__all__ = ["BULK_ACTION", "BULK_MESSAGES", "BULK_ROW_EXECUTION_MS", "bulk_targets", "target_payload"]

BULK_MESSAGES = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")
# (assumed) Execution time one target costs a bulk request, charged to the service-protection window. Microsoft
# says a bulk request "typically takes longer" and counts its execution time, but publishes no per-row figure.
BULK_ROW_EXECUTION_MS = 2.0
BULK_ACTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)/Microsoft\.Dynamics\.CRM\.(CreateMultiple|UpdateMultiple|UpsertMultiple)$")
ODATA_TYPE = "@odata.type"
ODATA_ID = "@odata.id"


def bulk_targets(table: TableDef, body: bytes) -> list[dict[str, Any]]:
    """The ``Targets`` of a bulk request, each checked for its ``@odata.type``."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError as exc:
        raise DataverseError("bad_payload", entity_set=table.entity_set, detail=f"Invalid JSON. {exc}") from None
    targets = payload.get("Targets") if isinstance(payload, dict) else None
    if not isinstance(targets, list) or not targets:
        raise DataverseError("bulk_no_targets")
    expected = f"Microsoft.Dynamics.CRM.{table.name}"
    for target in targets:
        if not isinstance(target, dict):
            raise DataverseError("bad_payload", entity_set=table.entity_set,
                                 detail="A resource was expected but a different payload was found.")
        if str(target.get(ODATA_TYPE, "")).lstrip("#") != expected:
            raise DataverseError("bulk_odata_type", expected=expected)
    return targets


def target_payload(target: Mapping[str, Any]) -> dict[str, Any]:
    """A target's columns, without its own annotations (``@odata.type``, ``@odata.id``); binds stay."""
    return {k: v for k, v in target.items() if k not in (ODATA_TYPE, ODATA_ID)}
