"""Which services an environment's state belongs to, and the refusal to use it against others.

Cursors (Dataverse delta links, journal positions) and key maps (source key -> target record id) only mean
something in the environment that made them. The state store keeps, per environment, the identity of each
side the first time a run reaches it:

- ``d365``: the organization URL with the ``OrganizationId`` and ``EnvironmentId`` that
  ``RetrieveCurrentOrganization`` returns (``WhoAmI``'s ``OrganizationId`` where that function is missing);
- ``campaign``: the Campaign base URL and organization (tenant) from the configuration. Campaign Standard's
  API offers a client no call that names the instance it reached, so the configured address is the identity.

A run whose services do not match refuses before it reads anything. ``--rebind`` accepts a deliberate move
(a sandbox copy, a new URL): the new identities are recorded; flows that read a moved side drop their cursor
(a delta link or journal position of the old service means nothing to the new one) and read everything
once; flows that write to a moved side are replayed: their key map is forgotten and each record is looked
up in the target by its key before it is created, so a copy is adopted and a fresh instance is filled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from mapsync.engine.config import Environment
from mapsync.engine.errors import ConfigError, TerminalError
from mapsync.engine.state.base import StateStore

__all__ = ["EnvironmentMismatch", "Rebound", "bind", "observe"]

# The service whose identity stands for a flow's source or target system: the events journal is Campaign's.
SERVICE_OF = {"d365": "d365", "campaign": "campaign"}


class EnvironmentMismatch(ConfigError):
    """The state store belongs to other services than the ones this configuration reaches."""


@dataclass(frozen=True, slots=True)
class Rebound:
    """What ``--rebind`` changed: the services whose identity moved, the flows that read a moved side (their
    cursor dropped) and the flows that write to one (replayed: key map forgotten, records looked up by key)."""

    services: tuple[str, ...]
    reread: tuple[str, ...]
    replay: tuple[str, ...]


async def observe(env: Environment, connectors: Any) -> dict[str, str]:
    """The identity of each configured side, as the services report it (``WhoAmI`` for Dataverse)."""
    found: dict[str, str] = {}
    if env.d365 is not None and connectors.d365 is not None:
        found["d365"] = await _dataverse(env.d365.url.rstrip("/"), connectors.d365.http)
    if env.campaign is not None:
        found["campaign"] = f"{env.campaign.base_url.rstrip('/')} organization {env.campaign.organization}"
    return found


async def _dataverse(url: str, http: Any) -> str:
    """The org's id and environment id from ``RetrieveCurrentOrganization``; ``WhoAmI``'s ``OrganizationId`` where
    the org does not offer that function (it needs no privilege beyond a user's; WhoAmI needs none at all)."""
    try:
        reply = (await http.request("GET", "RetrieveCurrentOrganization(AccessType=@p1)",
                                    params={"@p1": "Microsoft.Dynamics.CRM.EndpointAccessType'Default'"})).json()
        detail = reply.get("Detail") or {}
        return f"{url} organization {detail.get('OrganizationId')} environment {detail.get('EnvironmentId')}"
    except TerminalError:
        reply = (await http.request("GET", "WhoAmI")).json()
        return f"{url} organization {reply.get('OrganizationId')}"


async def bind(store: StateStore, environment: str, observed: dict[str, str], flows: dict[str, Any], *,
               rebind: bool, dry_run: bool) -> Rebound | None:
    """Check ``observed`` against what the store recorded for ``environment``; record what is new.

    Raises ``EnvironmentMismatch`` when a side differs and ``rebind`` is not given. ``dry_run`` (``plan``)
    checks without recording anything."""
    stored = await asyncio.to_thread(store.get_identities, environment)
    moved = {service: (stored[service], now) for service, now in observed.items()
             if service in stored and stored[service] != now}
    if moved and not rebind:
        lines = "; ".join(f"{service} was {was}, now {now}" for service, (was, now) in sorted(moved.items()))
        raise EnvironmentMismatch(
            f"the state store {store.url} belongs to other services than environment {environment} reaches "
            f"({lines}). Its cursors and key maps describe those services. If this is a deliberate move (a "
            f"sandbox copy, a new URL), run again with --rebind; otherwise point `state` at this environment's "
            "own store", setting=f"environments.{environment}.state")
    if dry_run:
        return None
    # A moved target may not hold the records the key map names (a fresh instance) or may hold them under the
    # same ids (a copy): replaying with adoption finds out record by record, and creates only what is missing.
    replay = tuple(sorted(name for name, flow in flows.items() if SERVICE_OF.get(flow.target.system) in moved))
    reread = tuple(sorted(name for name, flow in flows.items()
                          if SERVICE_OF.get(flow.source.system) in moved and name not in replay))

    def record() -> None:
        with store.transaction():
            for name in reread:
                store.delete_cursor(name)
            for service, identity in observed.items():
                if stored.get(service) != identity:
                    store.bind_identity(environment, service, identity)

    await asyncio.to_thread(record)
    return Rebound(tuple(sorted(moved)), reread, replay) if moved else None
