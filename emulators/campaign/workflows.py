"""Campaign Standard workflows as the REST API exposes them: the execution resource with its External signal
activities and their trigger URLs, the trigger itself, and the start/pause/resume/stop commands.

Documented by Adobe ("Triggering a signal activity", "Controlling a workflow"):
``GET workflow/execution/<workflowID>`` answers ``{"PKey", "activities": {"activity": {"<name>": {...,
"trigger": {"href"}}}}}``; ``POST`` on that ``trigger.href`` with ``{"source", "parameters"}`` fires the signal
(the source is mandatory, the parameters must be declared by the activity, a signal fires at most once
every 10 minutes and only in a running workflow); ``POST workflow/execution/<workflowID>/commands`` takes
``{"method": "start"|"pause"|"resume"|"stop"}``. An undeclared parameter is refused with the error text
Adobe shows (``RST-360011 ... '<name>' parameter isn't defined in signal activity.``).

Assumed (Adobe shows no reply for them): the other properties of the resource (``id``, ``label``, ``state``,
``lastError``, ``href``, an activity's ``name``/``label``/``parameters``), the trigger and command replies
(200 with an empty object), and the status (400) and ``error_code`` of a refused trigger or command.

Import workflows (assumed, as a consultant builds them; ``emulators/campaign/imports.py``): one per resource
of the served snapshots, ``WKFIMP`` + the resource name upper-cased, whose External signal ``signal1``
declares ``fileMask`` (string); its signal starts an import job in the background. A job that fails puts
the workflow in state ``error`` with ``lastError``; a ``start`` command clears both.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mapsync.emulators.campaign.errors import CampaignApiError
from mapsync.emulators.faults import FaultInjector

if TYPE_CHECKING:
    from mapsync.emulators.campaign.imports import Importer

__all__ = ["IMPORT_PREFIX", "SIGNAL_INTERVAL_SECONDS", "Signal", "Workflow", "Workflows"]

SIGNAL_INTERVAL_SECONDS = 600  # documented: a signal cannot be triggered more often than every 10 minutes
COMMANDS = {"start": "started", "pause": "paused", "resume": "started", "stop": "stopped"}
IMPORT_PREFIX = "WKFIMP"  # import workflow ids: WKFIMP + the resource name upper-cased (WKFIMPPROFILE)
TOO_SOON = "a signal cannot be triggered more often than every 10 minutes"


def _pkey(text: str) -> str:
    return "@" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@dataclass(slots=True)
class Signal:
    name: str
    label: str
    parameters: dict[str, str]  # name -> type (string, number, boolean, datetime)
    last_fired: float | None = None
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pkey(self) -> str:
        return _pkey("signal:" + self.name)


@dataclass(slots=True)
class Workflow:
    id: str
    label: str
    signals: dict[str, Signal]
    state: str = "started"  # started | paused | stopped | error
    resource: str | None = None  # an import workflow: the resource its files load into
    last_error: str | None = None

    @property
    def pkey(self) -> str:
        return _pkey("workflow:" + self.id)


def _seeded() -> dict[str, Workflow]:
    signal = Signal("signal1", "External signal", {"audience": "string", "email": "string", "template": "string",
                                                   "test": "boolean", "segmentCode": "string", "attribute": "datetime"})
    return {"WKF12": Workflow("WKF12", "Sync finished", {"signal1": signal})}


def import_workflow_id(resource: str) -> str:
    return IMPORT_PREFIX + resource.upper()


def _import_workflow(resource: str) -> Workflow:
    signal = Signal("signal1", "External signal", {"fileMask": "string"})
    return Workflow(import_workflow_id(resource), f"Import {resource} files", {"signal1": signal}, resource=resource)


class Workflows:
    """The org's workflows, addressable by id or PKey: ``WKF12`` with the signal ``signal1``, and with an
    ``importer``, one import workflow per resource it can load (``import_workflow_id``)."""

    def __init__(self, clock: Callable[[], float], *, signal_interval_seconds: float = SIGNAL_INTERVAL_SECONDS,
                 importer: Importer | None = None, faults: FaultInjector | None = None) -> None:
        self._clock = clock
        self.signal_interval_seconds = signal_interval_seconds
        self.importer = importer
        self.faults = faults
        self._workflows = _seeded()

    def reset(self) -> None:
        if self.importer is not None:
            self.importer.reset()
        self._workflows = _seeded()

    def _add_imports(self) -> None:
        """An import workflow for each resource served now (a reload may add one)."""
        if self.importer is None:
            return
        for resource in self.importer.store.resources:
            key = import_workflow_id(resource)
            if key not in self._workflows:
                self._workflows[key] = _import_workflow(resource)

    def find(self, key: str) -> Workflow:
        self._add_imports()
        found = self._workflows.get(key) or next((w for w in self._workflows.values() if w.pkey == key), None)
        if found is None:
            raise CampaignApiError("not_found", f"workflow/execution/{key}")
        return found

    def resource(self, key: str, base: str) -> dict[str, Any]:
        wf = self.find(key)
        href = f"{base}/workflow/execution/{wf.pkey}"
        return {
            "PKey": wf.pkey, "id": wf.id, "label": wf.label, "state": wf.state,
            **({"lastError": wf.last_error} if wf.last_error is not None else {}), "href": href,
            "activities": {"activity": {
                s.name: {"PKey": s.pkey, "name": s.name, "label": s.label, "parameters": dict(s.parameters),
                         "trigger": {"href": f"{href}/activities/activity/{s.pkey}/trigger/"}}
                for s in wf.signals.values()}},
        }

    def command(self, key: str, body: Any) -> dict[str, Any]:
        wf = self.find(key)
        method = body.get("method") if isinstance(body, Mapping) else None
        if method not in COMMANDS:
            raise CampaignApiError("bad_parameter", "method must be one of start, pause, resume, stop")
        if method == "resume" and wf.state == "error":
            raise CampaignApiError("bad_parameter", f"the workflow '{wf.id}' is in error: start it again")
        if method == "start":
            wf.last_error = None
        wf.state = COMMANDS[method]
        return {}

    def trigger(self, key: str, activity: str, body: Any) -> dict[str, Any]:
        wf = self.find(key)
        signal = next((s for s in wf.signals.values() if activity in (s.pkey, s.name)), None)
        if signal is None:
            raise CampaignApiError("not_found", f"activities/activity/{activity}")
        if not isinstance(body, Mapping) or not body.get("source"):
            raise CampaignApiError("bad_parameter", "'source' is mandatory")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise CampaignApiError("bad_parameter", "'parameters' must be an object")
        for name in parameters:
            if name not in signal.parameters:
                raise CampaignApiError("signal_rejected", (
                    "RST-360011 An error has occurred - please contact your administrator.\n"
                    f"'{name}' parameter isn't defined in signal activity."))
        if wf.state != "started":
            raise CampaignApiError("signal_rejected", f"the workflow '{wf.id}' is not running")
        now = self._clock()
        if signal.last_fired is not None and now - signal.last_fired < self.signal_interval_seconds:
            raise CampaignApiError("signal_rejected", TOO_SOON)
        if self.faults is not None and self.faults.take("signal_refused"):
            raise CampaignApiError("signal_rejected", TOO_SOON + " (injected fault signal_refused)")
        signal.last_fired = now
        signal.received.append({"source": body["source"], "parameters": dict(parameters)})
        if wf.resource is not None and self.importer is not None:
            self.importer.start(wf, str(parameters.get("fileMask") or ""))
        return {}
