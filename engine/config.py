"""Typed settings of one environment (`mapsync.yaml`): what connectors, auth and the state store are given.

The loader (``load_config``) checks the file against ``schemas/config.schema.json`` and resolves
``${ENV_VAR}`` secret references; it is built on top of these types. Secrets are held in ``Secret``,
whose repr and str never show the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CampaignSettings",
    "Config",
    "D365Settings",
    "Environment",
    "EventsSettings",
    "ServiceLimits",
    "Secret",
]


class Secret:
    """A credential. Shows as ``***`` everywhere; ``reveal()`` is the one way to read it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where it came from, e.g. "${D365_CLIENT_SECRET}"; safe to print

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source or '***'!r})" if self.source else "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """How hard mapsync may push one service. ``concurrency`` is the ceiling the adaptive limiter climbs to."""

    concurrency: int = 8
    requests_per_window: int | None = None  # e.g. Dataverse: 6000 per 300 s per user
    window_seconds: float = 300.0
    timeout_seconds: float = 60.0
    max_retries: int = 8
    batch_size: int = 100  # Dataverse $batch parts per request (<= 1000)


@dataclass(frozen=True, slots=True)
class D365Settings:
    url: str  # https://<org>.crm.dynamics.com (no trailing /api/data)
    tenant_id: str
    client_id: str
    client_secret: Secret
    authority_host: str = "https://login.microsoftonline.com"  # the emulator's Entra ID for tests and the demo
    api_version: str = "9.2"
    limits: ServiceLimits = field(default_factory=ServiceLimits)

    @property
    def api_base(self) -> str:
        return f"{self.url.rstrip('/')}/api/data/v{self.api_version}/"

    @property
    def scope(self) -> str:
        return f"{self.url.rstrip('/')}/.default"


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    organization: str
    client_id: str
    client_secret: Secret
    ims_url: str = "https://ims-na1.adobelogin.com"
    base_url: str = "https://mc.adobe.io"
    scopes: tuple[str, ...] = ("openid", "AdobeID", "campaign_sdk", "additional_info.projectedProductContext")
    limits: ServiceLimits = field(default_factory=ServiceLimits)

    @property
    def api_base(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.organization}/campaign/"


@dataclass(frozen=True, slots=True)
class EventsSettings:
    journal_url: str  # https://events.adobe.io/events/organizations/<org>/integrations/<int>/<registration>
    page_size: int = 100
    limits: ServiceLimits = field(default_factory=ServiceLimits)


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    d365: D365Settings | None
    campaign: CampaignSettings | None
    events: EventsSettings | None
    state_url: str  # sqlite:///path/to/file.sqlite or postgresql://...
    ca_file: Path | None = None  # extra CA bundle to trust (the emulator's test CA)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    mappings: Path
    environments: dict[str, Environment]
