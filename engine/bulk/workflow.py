"""The import workflow of a Campaign resource, through the REST API as Adobe documents it: ``GET
workflow/execution/<id>`` shows its state and its activities, each External signal activity with a
``trigger.href``; ``POST`` that URL with ``source`` and ``parameters`` signals it.

Adobe's rules: the workflow must be running (mapsync never starts it: a person decides that), and a
signal may not be sent more often than every 10 minutes (``bulk.signal_interval_seconds``). The time of the
last signal sent to each workflow is kept in the state store, so a restarted run waits out the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mapsync.engine.errors import SyncError, TerminalError
from mapsync.engine.state.base import StateStore

__all__ = ["SIGNAL_ATTEMPTS", "Execution", "Workflow", "WorkflowNotRunning", "read_execution"]

log = logging.getLogger("mapsync.bulk")

SIGNAL_ATTEMPTS = 3  # a signal refused by the 10-minute rule is sent again after the wait, this often at most
MAX_PAYLOAD = 64 * 1024  # Adobe: a signal's payload may not exceed 64 KB


class WorkflowNotRunning(SyncError):
    pass


@dataclass(frozen=True, slots=True)
class Execution:
    state: str  # started | paused | stopped | error
    last_error: str | None
    trigger: str | None  # the signal activity's trigger URL


async def read_execution(http: Any, workflow_id: str, signal_name: str) -> Execution:
    """The workflow's state and its signal activity's trigger URL (``GET workflow/execution/<id>``)."""
    body = (await http.request("GET", f"workflow/execution/{quote(workflow_id)}")).json()
    activities = ((body.get("activities") or {}).get("activity") or {})
    activity = activities.get(signal_name) or {}
    trigger = (activity.get("trigger") or {}).get("href")
    return Execution(str(body.get("state", "")), body.get("lastError"), trigger if isinstance(trigger, str) else None)


class Workflow:
    def __init__(self, http: Any, workflow_id: str, signal: str, store: StateStore, *, interval: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.http = http
        self.id = workflow_id
        self.signal_name = signal
        self.store = store
        self.interval = interval
        self.clock = clock

    async def execution(self) -> Execution:
        return await read_execution(self.http, self.id, self.signal_name)

    async def signal(self, parameters: dict[str, str]) -> datetime:
        """Signal the workflow once (waiting out the 10-minute rule); returns when it was sent."""
        payload = {"source": "mapsync", "parameters": parameters}
        if len(json.dumps(payload).encode()) > MAX_PAYLOAD:
            raise SyncError(f"workflow {self.id}: the signal's parameters exceed Adobe's 64 KB limit")
        for attempt in range(1, SIGNAL_ATTEMPTS + 1):
            execution = await self.execution()
            self._check_running(execution)
            if execution.trigger is None:
                raise TerminalError(f"workflow {self.id} has no External signal activity {self.signal_name!r}; "
                                    "name the right one in bulk.workflows", service="campaign")
            await self._wait_for_interval()
            resp = await self.http.request("POST", execution.trigger, json=payload, idempotent=False,
                                           accept=(400, 409))
            if resp.status_code < 400:
                sent = self.clock()
                await asyncio.to_thread(self.store.set_meta, self._meta_key, sent.isoformat())
                return sent
            text = resp.text
            if "10 minutes" in text and attempt < SIGNAL_ATTEMPTS:
                log.info("workflow %s refused the signal (10-minute rule): waiting", self.id,
                         extra={"event": "bulk.signal_refused", "workflow": self.id})
                if await self._since_last() is None:
                    # Signalled by someone else (or mapsync's own time is unknown): a whole interval from now.
                    await asyncio.to_thread(self.store.set_meta, self._meta_key, self.clock().isoformat())
                continue
            if "not running" in text.lower():
                self._check_running(Execution("stopped", None, None))
            raise TerminalError(f"workflow {self.id} refused the signal (HTTP {resp.status_code}): {text[:200]}",
                                service="campaign", status=resp.status_code)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _check_running(self, execution: Execution) -> None:
        if execution.state not in ("started", "running"):
            why = f" ({execution.last_error})" if execution.last_error else ""
            raise WorkflowNotRunning(
                f"the Campaign import workflow {self.id} is not running (state {execution.state or 'unknown'}{why}): "
                "start it in Campaign (or POST workflow/execution/<id>/commands {\"method\": \"start\"}), then run "
                "mapsync again; the load resumes where it stopped")

    @property
    def _meta_key(self) -> str:
        return f"bulk:last-signal:{self.id}"

    async def _since_last(self) -> float | None:
        """Seconds since mapsync last signalled this workflow, while that is within the interval; else None."""
        raw = await asyncio.to_thread(self.store.get_meta, self._meta_key)
        if raw is None:
            return None
        elapsed = (self.clock() - datetime.fromisoformat(raw)).total_seconds()
        return elapsed if elapsed < self.interval else None

    async def _wait_for_interval(self) -> None:
        elapsed = await self._since_last()
        if elapsed is not None:
            wait = self.interval - elapsed
            log.info("workflow %s was signalled %.0fs ago: waiting %.0fs (one signal per %.0fs)", self.id, elapsed,
                     wait, self.interval, extra={"event": "bulk.signal_wait", "workflow": self.id})
            await asyncio.sleep(wait)
