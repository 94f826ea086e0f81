"""Which path a flow's writes take: Campaign's REST API (one call per record) or a bulk load through file
import. Bulk serves full reads (a first run, ``--full``, ``--replay``) that plan more writes than
``bulk.min_records``, or any full read with ``--bulk``; everything else, and every flow that cannot use it,
goes through REST exactly as before."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["Choice", "choose", "cost_line", "unavailable"]

ASSUMED_IMPORT_ROWS_PER_SECOND = 5000  # for the plan's estimate of poll calls only
READ_PAGE = 1000  # Campaign's largest page: what reconciliation reads per call


@dataclass(frozen=True, slots=True)
class Choice:
    bulk: bool
    why: str

    @property
    def path(self) -> str:
        return "bulk" if self.bulk else "REST"


def unavailable(flow: Any, env: Any, links_to: Collection[str]) -> str | None:
    """Why ``flow`` can never take the bulk path in ``env`` (None: it can)."""
    if flow.target.system != "campaign":
        return "writes to Dynamics 365"
    if links_to:
        # The import's reconciliation is by the flow's own key only: a link (a PKey of another resource's
        # record) would have to be resolved inside the workflow. Linked flows stay on the API path.
        return f"linked flow (links to {', '.join(sorted(links_to))})"
    if flow.mode == "update":
        return "mode update (only records the target already has are written)"
    if env.campaign is None or env.campaign.sftp is None:
        return "no campaign.sftp settings"
    if flow.target.name not in env.bulk.workflows:
        return f"no import workflow for {flow.target.name} in bulk.workflows"
    return None


def choose(why_not: str | None, *, full: bool, writes: int, min_records: int, forced: bool | None) -> Choice:
    if why_not is not None:
        return Choice(False, why_not)
    if forced is False:
        return Choice(False, "--no-bulk")
    if not full:
        return Choice(False, "incremental read")
    if forced:
        return Choice(True, f"--bulk (full read, {writes:,} writes)")
    if writes > min_records:
        return Choice(True, f"full read, {writes:,} writes > bulk.min_records {min_records:,}")
    return Choice(False, f"full read, {writes:,} writes <= bulk.min_records {min_records:,}")


def cost_line(writes: int, reads: int, *, chunk_records: int, poll_seconds: float) -> str:
    """The API calls of both paths for ``writes`` (REST: one per record; bulk: signal, polls, reconciliation)."""
    files = max(1, math.ceil(writes / max(1, chunk_records)))
    polls = max(1, math.ceil(writes / ASSUMED_IMPORT_ROWS_PER_SECOND / max(poll_seconds, 0.001)))
    bulk_calls = 2 + polls + max(1, math.ceil(writes / READ_PAGE))
    return (f"REST {reads + writes:,} call(s) ({reads:,} read(s) + {writes:,} write(s)); bulk about "
            f"{reads + bulk_calls:,} call(s) ({reads:,} read(s) + 1 signal + ~{polls:,} poll(s) + "
            f"~{math.ceil(writes / READ_PAGE):,} reconciliation read(s)) and {files:,} file(s) over SFTP")
