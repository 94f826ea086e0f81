"""Connectors to the three services, and ``build_connectors`` which wires them to auth and the HTTP layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import httpx

    from mapsync.dsl.schema import Catalog
    from mapsync.engine.auth import TokenCache
    from mapsync.engine.config import Environment
    from mapsync.engine.connectors.campaign import CampaignConnector
    from mapsync.engine.connectors.d365 import D365Connector
    from mapsync.engine.connectors.events import EventsConnector

__all__ = ["Connectors", "build_connectors"]


class Connectors(NamedTuple):
    """The environment's connectors (None for a service it does not configure), and the token providers their
    HTTP clients were built with (closed with them). ``await aclose()`` when done."""

    d365: D365Connector | None
    campaign: CampaignConnector | None
    events: EventsConnector | None
    auth: tuple[Any, ...] = ()

    async def aclose(self) -> None:
        closed: set[int] = set()
        for conn in (self.d365, self.campaign, self.events):
            if conn is not None and id(conn.http) not in closed:
                closed.add(id(conn.http))
                await conn.http.aclose()
        for auth in self.auth:
            await auth.aclose()


def build_connectors(env: Environment, *, catalog: Catalog | None = None,
                     transport: httpx.AsyncBaseTransport | None = None, msal_http_client: object = None,
                     tokens: TokenCache | None = None) -> Connectors:
    """Connectors for ``env``: one HttpClient per service, Entra ID for Dataverse, one IMS token for Adobe.

    ``transport`` (e.g. ``httpx.ASGITransport(app=emulator.app)``) routes every service in-process;
    ``msal_http_client`` does the same for MSAL, which speaks ``requests``.
    """
    from mapsync.dsl.schema import load_catalog
    from mapsync.engine.auth import EntraTokenProvider, ImsTokenProvider
    from mapsync.engine.connectors.campaign import CampaignConnector, campaign_headers
    from mapsync.engine.connectors.d365 import ODATA_HEADERS, D365Connector
    from mapsync.engine.connectors.events import EventsConnector
    from mapsync.engine.errors import ConfigError
    from mapsync.engine.http import HttpClient

    catalog = catalog or load_catalog()
    verify: bool | str = str(env.ca_file) if env.ca_file else True
    prefix = f"environments.{env.name}"
    d365 = campaign = events = None
    auth: list[Any] = []
    if env.d365 is not None:
        entra = EntraTokenProvider(env.d365, setting_prefix=f"{prefix}.d365", verify=verify,
                                   http_client=msal_http_client, cache=tokens)
        http = HttpClient("d365", env.d365.limits, entra, verify=verify, transport=transport,
                          base_url=env.d365.api_base, headers={k: v for k, v in ODATA_HEADERS.items()
                                                               if k != "Content-Type"})
        d365 = D365Connector(env.d365, http, catalog)
        auth.append(entra)
    ims = None
    if env.campaign is not None:
        ims = ImsTokenProvider(env.campaign, setting_prefix=f"{prefix}.campaign", verify=verify, transport=transport,
                               cache=tokens)
        http = HttpClient("campaign", env.campaign.limits, ims, verify=verify, transport=transport,
                          base_url=env.campaign.api_base, headers=campaign_headers(env.campaign))
        campaign = CampaignConnector(env.campaign, http, catalog)
        auth.append(ims)
    if env.events is not None:
        if env.campaign is None or ims is None:
            raise ConfigError(f"{prefix}.campaign: the events journal needs the campaign (IMS) credentials",
                              setting=f"{prefix}.campaign")
        http = HttpClient("events", env.events.limits, ims, verify=verify, transport=transport,
                          headers={"x-api-key": env.campaign.client_id, "Accept": "application/json"})
        events = EventsConnector(env.events, http)
    return Connectors(d365, campaign, events, tuple(auth))
