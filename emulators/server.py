"""All emulated services in ONE Starlette app, served in-process or by uvicorn over TLS on loopback.

    /{tenant}/v2.0/.well-known/openid-configuration, /{tenant}/oauth2/v2.0/token   Entra ID
    /api/data/v9.2/...                                                              Dataverse
    /ims/token/v3                                                                   Adobe IMS
    /{ORG}/campaign/...                                                             Campaign Standard
    /events/organizations/{org}/integrations/{int}/{registration}                  I/O Events journal
    /_emulator/...                                                                  control (docs/emulators.md)
    sftp://127.0.0.1:<port>/incoming, /outgoing     Campaign's SFTP storage (its own listener, emulators/sftp.py)

``Emulator(...)`` holds every store; ``Emulator.app`` is the ASGI app (use it with
``httpx.ASGITransport(app=...)``); ``serve(...)`` runs it; ``write_config(...)`` writes a ready
``mapsync.yaml`` whose ``emulator`` environment points at it.

The demo must work with no environment set up, so ``write_config`` writes the emulator's client secrets
literally: they are fixed, throw-away values that only open the loopback emulator (the config loader's
``${VAR}`` references have no default syntax, and requiring variables would break ``mapsync demo``).
Real environments keep using ``${VAR}`` references.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from mapsync import resources
from mapsync.emulators.campaign import Campaign, CampaignStore, campaign_routes, load_resources
from mapsync.emulators.campaign.errors import ASSUMED, BIG_TABLE_THRESHOLD
from mapsync.emulators.campaign.imports import IMPORT_ROWS_PER_SECOND, Importer
from mapsync.emulators.campaign.workflows import SIGNAL_INTERVAL_SECONDS, Workflows, import_workflow_id
from mapsync.emulators.faults import FaultInjector, FaultMiddleware, FaultProfile
from mapsync.emulators.ims import IMS_EXPIRES_IN, IMS_ORG, ims_routes
from mapsync.emulators.journal import Clock, Journal, journal_routes
from mapsync.emulators.jwt_signer import JwtSigner
from mapsync.emulators.limits import ServiceProtection
from mapsync.emulators.seed import SeedData
from mapsync.emulators.sftp import SftpAccess, SftpServer
from mapsync.emulators.tokens import TokenIssuer

log = logging.getLogger("mapsync.emulator")

__all__ = ["AdobeServices", "BulkSetup", "Credentials", "DataverseServices", "Emulator", "Limits", "PortInUse",
           "Served", "bind", "config_files", "serve", "start_in_thread", "write_config"]

Scope = MutableMapping[str, Any]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who the emulator knows. Loopback-only throw-away values; the defaults make the demo reproducible."""

    tenant_id: str = "00000000-0000-4000-8000-00000000d365"
    d365_client_id: str = "11111111-1111-4111-8111-111111111111"
    d365_client_secret: str = "emulator-d365-secret"
    organization: str = "mapsync-demo"
    campaign_client_id: str = "mapsync-emulator-campaign"
    campaign_client_secret: str = "emulator-campaign-secret"
    ims_org_id: str = "4CC7D9704674CFB2138A2C54"
    integration: str = "54108"
    registration: str = "f89067f2-0d50-4bb2-bf78-209d0eacb6eb"
    sftp_username: str = "mapsync-emulator"
    sftp_password: str = "emulator-sftp-secret"

    def __repr__(self) -> str:  # secrets never in any output
        return f"Credentials(tenant_id={self.tenant_id!r}, organization={self.organization!r})"

    @property
    def journal_path(self) -> str:
        return f"/events/organizations/{self.ims_org_id}/integrations/{self.integration}/{self.registration}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-user request limits. ``None`` switches a service's limit off. Dataverse keeps its real
    defaults (6000 requests / 1,200,000 ms / 52 concurrent per 300 s); Campaign has no published limit."""

    dataverse_requests: int | None = 6000
    dataverse_execution_ms: int | None = 1_200_000
    dataverse_concurrency: int | None = 52
    dataverse_window_seconds: float = 300
    campaign_requests: int | None = None
    campaign_concurrency: int | None = None
    campaign_window_seconds: float = 60

    def dataverse(self, clock: Callable[[], float]) -> ServiceProtection:
        return ServiceProtection(self.dataverse_requests, self.dataverse_execution_ms, self.dataverse_concurrency,
                                 self.dataverse_window_seconds, clock=clock)

    def campaign(self, clock: Callable[[], float]) -> ServiceProtection | None:
        if self.campaign_requests is None and self.campaign_concurrency is None:
            return None
        return ServiceProtection(self.campaign_requests, None, self.campaign_concurrency,
                                 self.campaign_window_seconds, clock=clock)


class AdobeServices:
    """IMS + Campaign + journal sharing one token issuer and clock. Usable alone (the contract tests)."""

    def __init__(
        self,
        *,
        seed: int = 42,
        clock: Clock | None = None,
        credentials: Credentials | None = None,
        token_lifetime: int = IMS_EXPIRES_IN,
        retention: timedelta = timedelta(days=7),
        limits: Limits | None = None,
        big_table_threshold: int = BIG_TABLE_THRESHOLD,
        snapshots: Path | None = None,
        import_root: Path | None = None,
        signal_interval_seconds: float = SIGNAL_INTERVAL_SECONDS,
        import_rows_per_second: float = IMPORT_ROWS_PER_SECOND,
        faults: FaultInjector | None = None,
    ) -> None:
        """``import_root``: the SFTP storage's folder; with it, each resource gets an import workflow."""
        self.seed = seed
        self.snapshots = (snapshots or resources.snapshots_dir()) / "campaign"
        self.big_table_threshold = big_table_threshold
        self.clock = clock or Clock()
        self.credentials = credentials or Credentials()
        self.issuer = TokenIssuer(token_lifetime, clock=self.clock.time)
        self.issuer.register_client(IMS_ORG, self.credentials.campaign_client_id, self.credentials.campaign_client_secret)
        self.store = CampaignStore(load_resources(self.snapshots), clock=self.clock.now)
        self.journal = Journal(clock=self.clock, retention=retention, secret=f"journal-{seed}")
        self.campaign = Campaign(self.store, self.journal, seed=seed)
        self.importer = (Importer(self.store, import_root, rows_per_second=import_rows_per_second, faults=faults)
                         if import_root is not None else None)
        self.workflows = Workflows(self.clock.time, signal_interval_seconds=signal_interval_seconds,
                                   importer=self.importer, faults=faults)
        self.protection: ServiceProtection | None = (limits or Limits()).campaign(self.clock.time)

    def set_limits(self, limits: Limits) -> None:
        self.protection = limits.campaign(self.clock.time)

    def routes(self) -> list[BaseRoute]:
        c = self.credentials
        return [
            *ims_routes(self.issuer),
            *campaign_routes(self.store, self.issuer, organization=c.organization, limiter=lambda: self.protection,
                             big_table_threshold=self.big_table_threshold, workflows=self.workflows),
            *journal_routes(self.journal, self.issuer, organization=c.ims_org_id, integration=c.integration,
                            registration=c.registration),
        ]

    def seed_profiles(self, data: SeedData) -> int:
        return self.store.insert_many("profile", list(data.iter_profiles()))

    def reset(self) -> None:
        self.workflows.reset()  # first: a running import job stops before the store it writes is emptied
        self.store.reset()
        self.journal.reset()
        self.campaign.reset()
        if self.protection is not None:
            self.protection.reset()


class DataverseServices:
    """Entra ID + Dataverse (built by another module) with the seeded CRM rows loaded."""

    def __init__(self, data: SeedData, *, clock: Clock, credentials: Credentials, token_lifetime: int | None,
                 limits: Limits, snapshots: Path | None = None) -> None:
        from mapsync.emulators.dataverse.security import DataverseSetup
        from mapsync.emulators.dataverse.store import DataverseStore

        self.data = data
        self.clock = clock
        self.tenant_id = credentials.tenant_id
        # Entra ID issues signed JWTs (Adobe IMS tokens stay opaque: no client may read them).
        self.issuer = TokenIssuer(token_lifetime or 3599, clock=clock.time, signer=JwtSigner())
        self.issuer.register_client(credentials.tenant_id, credentials.d365_client_id, credentials.d365_client_secret)
        self.snapshots = (snapshots or resources.snapshots_dir()) / "d365"
        self.store = DataverseStore(self.snapshots, clock=clock.now)
        self.protection = limits.dataverse(clock.time)
        self.setup = DataverseSetup()  # the application user, its privileges, tracking and key switches

    def routes(self, faults: FaultInjector | None = None) -> list[BaseRoute]:
        from mapsync.emulators.dataverse.app import dataverse_routes
        from mapsync.emulators.entra import entra_routes

        # The Dataverse routes apply the fault injector themselves, with Dataverse's error body.
        return [*entra_routes(self.issuer),
                *dataverse_routes(self.store, self.issuer, self.protection, faults, tenant=self.tenant_id,
                                  setup=self.setup)]

    def set_limits(self, limits: Limits) -> None:
        # The routes hold this object, so it is changed in place rather than replaced.
        fresh = limits.dataverse(self.clock.time)
        for name in ("requests", "execution_ms", "concurrency", "window_seconds"):
            setattr(self.protection, name, getattr(fresh, name))
        self.protection.reset()

    def populate(self) -> None:
        """Accounts first, then contacts and vehicles whose lookups point at them."""
        # ``create`` (not ``insert``) skips turning each stored row back into a dict: seeding 1M rows.
        create = self.store.create
        served = self.store.tables  # a project's own snapshots may leave out a seeded table
        for row in self.data.iter_accounts() if "account" in served else ():
            create("account", row, trusted=True)
        for row in self.data.iter_contacts() if "contact" in served else ():
            create("contact", _lookups(row, {"parentcustomerid": "account"}), trusted=True)
        for row in self.data.iter_vehicles() if "new_vehicle" in served else ():
            create("new_vehicle", _lookups(row, {"new_contactid": "contact"}), trusted=True)

    def generate(self, table: str, count: int, *, seed: int) -> int:
        """Add ``count`` generated rows to ``table`` (any table of the snapshots), as CRM users would make them."""
        from mapsync.emulators.generate import generate_rows

        defn = self.store.tables.get(table)
        if defn is None:
            raise KeyError(table)
        targets = {t for c in defn.columns if c.type == "lookup" for t in c.targets}
        lookup_ids = {t: self.store.ids(t, limit=10_000) for t in targets if t in self.store.tables}
        made = 0
        for row in generate_rows(defn, count, seed=seed, lookup_ids=lookup_ids):
            self.store.create(table, row, trusted=True)
            made += 1
        return made

    def reset(self) -> None:
        self.store.reset()
        self.protection.reset()


def _lookups(row: dict[str, Any], lookups: dict[str, str]) -> dict[str, Any]:
    """Seed rows carry lookups as ``name: guid``; the store takes ``_name_value`` plus the target table."""
    out = dict(row)
    for name, target in lookups.items():
        value = out.pop(name, None)
        out[f"_{name}_value"] = value
        if value is not None:
            out[f"_{name}_value@Microsoft.Dynamics.CRM.lookuplogicalname"] = target
    return out


def campaign_error_body(status: int, retry_after: int) -> dict[str, Any]:
    """Injected faults on Adobe paths answer in the gateway's shape."""
    key = {429: "too_many_requests", 500: "server_error", 503: "unavailable"}.get(status, "server_error")
    spec = ASSUMED[key]
    return {"error_code": spec.code, "message": spec.message}


def _service(path: str, organization: str) -> str | None:
    if path.startswith("/api/data/"):
        return "dataverse"
    if path.startswith(f"/{organization}/campaign/"):
        return "campaign"
    if path.startswith("/events/"):
        return "journal"
    if path.startswith("/ims/"):
        return "ims"
    if path.startswith("/_emulator"):
        return None
    if "/oauth2/" in path or "/.well-known/" in path or "/discovery/" in path:
        return "entra"
    return "other"


class _Counting:
    """Outermost middleware: requests and replies by status, per service (``/_emulator`` not counted)."""

    def __init__(self, app: Any, organization: str) -> None:
        self.app = app
        self.organization = organization
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        service = _service(scope.get("path", ""), self.organization) if scope["type"] == "http" else None
        if service is None:
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.requests[service] += 1

        async def counted(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self.statuses[(service, int(message["status"]))] += 1
            await send(message)

        await self.app(scope, receive, counted)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.statuses.clear()


class SnapshotWatch:
    """Notices a snapshot file added, changed or removed, looking at most once a second (a stat per file)."""

    def __init__(self, root: Path, *, interval: float = 1.0) -> None:
        self.root, self.interval = root, interval
        self._seen = self._fingerprint()
        self._checked = time.monotonic()

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        found = []
        for path in sorted(self.root.glob("*/*.json")):
            try:
                stat = path.stat()
            except OSError:  # removed between the glob and the stat: the next look sees it gone
                continue
            found.append((path.as_posix(), stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self.interval:
            return False
        self._checked = now
        return self._fingerprint() != self._seen

    def mark(self) -> None:
        self._seen = self._fingerprint()
        self._checked = time.monotonic()


class _ReloadOnChange:
    """Outermost: before a request, serve the snapshots as they are on disk now (a consultant edited one)."""

    def __init__(self, app: Any, emulator: Emulator) -> None:
        self.app, self.emulator = app, emulator

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.emulator.reload_if_changed()
        await self.app(scope, receive, send)


class Emulator:
    """Every emulated system with its seeded data, as one ASGI app (``.app``)."""

    def __init__(
        self,
        *,
        seed: int = 42,
        contacts: int = 1000,
        faults: FaultProfile | str = "none",
        limits: Limits | None = None,
        token_lifetime: int | None = None,
        retention: timedelta = timedelta(days=7),
        credentials: Credentials | None = None,
        clock: Clock | None = None,
        extra_routes: Iterable[BaseRoute] = (),
        snapshots: Path | None = None,
        sftp: bool = True,
        signal_interval_seconds: float = SIGNAL_INTERVAL_SECONDS,
        import_rows_per_second: float = IMPORT_ROWS_PER_SECOND,
    ) -> None:
        """``sftp``: Campaign's SFTP storage and its import workflows (the server listens once served);
        ``signal_interval_seconds``: the 10-minute rule, shorter for tests; ``import_rows_per_second``: the
        import job's pace."""
        # Imported here so that the Adobe half (AdobeServices) does not need the Dataverse package.
        from mapsync.emulators.control import control_routes
        from mapsync.emulators.setup import Setup, SetupMiddleware

        self.seed = seed
        # The schema snapshots served: a project's own (`mapsync emulate` in a project), else the built-in ones.
        self.snapshots = Path(snapshots) if snapshots is not None else resources.snapshots_dir()
        self._watch = SnapshotWatch(self.snapshots)
        self.data = SeedData(seed=seed, contacts=contacts)
        self.clock = clock or Clock()
        self.credentials = credentials or Credentials()
        self.limits = limits or Limits()
        profile = FaultProfile.named(faults) if isinstance(faults, str) else faults
        self.dataverse_faults = FaultInjector(profile)
        self.adobe_faults = FaultInjector(profile)
        self.sftp: SftpServer | None = (
            SftpServer(username=self.credentials.sftp_username, password=self.credentials.sftp_password,
                       faults=self.adobe_faults) if sftp else None)
        self.adobe = AdobeServices(seed=seed, clock=self.clock, credentials=self.credentials,
                                   token_lifetime=token_lifetime or IMS_EXPIRES_IN, retention=retention,
                                   limits=self.limits, snapshots=self.snapshots,
                                   import_root=self.sftp.root if self.sftp is not None else None,
                                   signal_interval_seconds=signal_interval_seconds,
                                   import_rows_per_second=import_rows_per_second, faults=self.adobe_faults)
        self.dataverse = DataverseServices(self.data, clock=self.clock, credentials=self.credentials,
                                           token_lifetime=token_lifetime, limits=self.limits,
                                           snapshots=self.snapshots)
        self._seed_stores()
        router = Starlette(routes=[*control_routes(self), *self.adobe.routes(),
                                   *self.dataverse.routes(self.dataverse_faults), *extra_routes])
        org = self.credentials.organization
        inner = FaultMiddleware(router, self.adobe_faults, campaign_error_body,
                                on_token_expiry=self.adobe.issuer.expire_older_than,
                                applies=lambda scope: _service(scope.get("path", ""), org) in ("campaign", "journal"))
        self.setup = Setup(dataverse=self.dataverse.setup)
        self.counting = _Counting(SetupMiddleware(inner, self.setup, org), org)
        self.app = _ReloadOnChange(self.counting, self)

    def reload(self) -> dict[str, dict[str, list[str]]]:
        """Serve the snapshots as they are now on disk: new tables and resources appear (empty), changed ones
        keep their rows. What changed, per system."""
        from mapsync.dsl.schema import load_table
        from mapsync.emulators.dataverse.metadata import load_tables

        self._watch.mark()
        for path in sorted(self.snapshots.glob("*/*.json")):
            load_table(path)  # a file that is not a valid snapshot: SchemaError naming it, nothing changed
        return {"d365": self.dataverse.store.reload_tables(load_tables(self.snapshots / "d365")),
                "campaign": self.adobe.store.reload_resources(load_resources(self.snapshots / "campaign"))}

    def reload_if_changed(self) -> bool:
        from mapsync.dsl.schema import SchemaError

        if not self._watch.changed():
            return False
        try:
            self.reload()
        except SchemaError as exc:  # a file saved half-edited: keep serving what was there, say why
            log.warning("emulator: snapshots not reloaded: %s", exc)
            return False
        return True

    def _seed_stores(self) -> None:
        self.dataverse.populate()
        self.adobe.seed_profiles(self.data)

    # ---- Campaign's SFTP storage -----------------------------------------------------------------
    @property
    def sftp_root(self) -> Path:
        """The folder the SFTP server serves as ``/`` (``incoming/``, ``outgoing/``)."""
        return self._sftp().root

    @property
    def sftp_port(self) -> int | None:
        """The SFTP server's port while it listens, else None."""
        return self.sftp.port if self.sftp is not None else None

    @property
    def sftp_host_key_line(self) -> str:
        """The server's public host key as one OpenSSH line, for a client to pin."""
        return self._sftp().host_key_line

    @property
    def sftp_credentials(self) -> tuple[str, str]:
        return self.credentials.sftp_username, self.credentials.sftp_password

    def _sftp(self) -> SftpServer:
        if self.sftp is None:
            raise RuntimeError("this emulator was made with sftp=False")
        return self.sftp

    def start_sftp(self, host: str = "127.0.0.1", port: int = 0) -> int | None:
        """Start the SFTP server (``serve`` and ``start_in_thread`` do); its port, None with sftp=False."""
        return self.sftp.start(host, port) if self.sftp is not None else None

    def stop_sftp(self) -> None:
        """Stop the SFTP server and any running import job (the files stay until the emulator is gone)."""
        if self.adobe.importer is not None:
            self.adobe.importer.stop()
        if self.sftp is not None:
            self.sftp.stop()

    def bulk_setup(self) -> BulkSetup | None:
        """What a client needs for the bulk path (``write_config``), None while no SFTP server listens."""
        if self.sftp is None or self.sftp.port is None:
            return None
        return BulkSetup(self.sftp.access(), tuple(sorted(self.adobe.store.resources)),
                         self.adobe.workflows.signal_interval_seconds)

    # ---- control --------------------------------------------------------------------------------
    def set_faults(self, profile: FaultProfile | str) -> None:
        self.dataverse_faults.set_profile(profile)
        self.adobe_faults.set_profile(profile)

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits
        self.adobe.set_limits(limits)
        self.dataverse.set_limits(limits)

    def reset(self) -> None:
        """Back to the freshly seeded state: stores, journal, tokens' budgets and counters."""
        self.adobe.reset()
        self.dataverse.reset()
        self._seed_stores()
        self.counting.reset()
        self.dataverse_faults.counts.clear()
        self.adobe_faults.counts.clear()
        self.setup.reset()

    def counters(self) -> dict[str, Any]:
        statuses: dict[str, dict[str, int]] = {}
        for (service, status), n in sorted(self.counting.statuses.items()):
            statuses.setdefault(service, {})[str(status)] = n
        throttled = {"dataverse": dict(self.dataverse.protection.throttled)}
        if self.adobe.protection is not None:
            throttled["campaign"] = dict(self.adobe.protection.throttled)
        return {
            "requests": dict(self.counting.requests),
            "statuses": statuses,
            "throttled_429": {s: sum(v for k, v in codes.items() if k == "429") for s, codes in statuses.items()},
            "limiter": throttled,
            "faults_injected": {"dataverse": dict(self.dataverse_faults.counts), "adobe": dict(self.adobe_faults.counts)},
        }

    # ---- URLs and config ------------------------------------------------------------------------
    def urls(self, base: str) -> dict[str, str]:
        c = self.credentials
        base = base.rstrip("/")
        return {
            "entra": f"{base}/{c.tenant_id}/oauth2/v2.0/token",
            "dataverse": f"{base}/api/data/v9.2/",
            "ims": f"{base}/ims/token/v3",
            "campaign": f"{base}/{c.organization}/campaign/",
            "journal": f"{base}{c.journal_path}",
            "control": f"{base}/_emulator/",
        }


def config_files(path: Path) -> tuple[str, Path]:
    """The state URL and the CA folder that belong to the config file ``path``: named after it, so that two
    emulators writing two config files into one folder never share a state store or a CA."""
    stem = path.stem or "mapsync"
    return f"sqlite:///.mapsync/{stem}.sqlite", path.parent / ".mapsync" / f"{stem}-ca"


@dataclass(frozen=True, slots=True)
class BulkSetup:
    """The bulk path's side of a running emulator: its SFTP server, the resources with an import workflow,
    and the signal interval it enforces."""

    sftp: SftpAccess
    resources: tuple[str, ...]
    signal_interval_seconds: float

    def config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``campaign.sftp`` and ``bulk`` of an environment pointing at this emulator."""
        a = self.sftp
        sftp = {"host": a.host, "port": a.port, "username": a.username, "password": a.password,
                "host_key": a.host_key, "incoming": "/incoming", "outgoing": "/outgoing"}
        interval = self.signal_interval_seconds
        bulk = {"signal_interval_seconds": int(interval) if float(interval).is_integer() else interval,
                "workflows": {r: {"workflow": import_workflow_id(r), "signal": "signal1"} for r in self.resources}}
        return sftp, bulk


def write_config(path: Path, *, base_url: str, ca_file: Path | None, credentials: Credentials | None = None,
                 state: str | None = None, mappings: str = "mappings", snapshots: str | None = None,
                 bulk: BulkSetup | None = None) -> Path:
    """Write a ``mapsync.yaml`` with one environment, ``emulator``, pointing at ``base_url``; the state store
    defaults to one named after the config file (``config_files``). With ``bulk`` (``Emulator.bulk_setup()``)
    it also writes ``campaign.sftp`` (the emulator's port, throw-away login and host key) and ``bulk``."""
    import yaml

    c = credentials or Credentials()
    state = state or config_files(path)[0]
    base = base_url.rstrip("/")
    env: dict[str, Any] = {
        "d365": {"url": base, "tenant_id": c.tenant_id, "client_id": c.d365_client_id,
                 "client_secret": c.d365_client_secret,
                 "authority_host": base},
        "campaign": {"organization": c.organization, "client_id": c.campaign_client_id,
                     "client_secret": c.campaign_client_secret,
                     "ims_url": base, "base_url": base},
        "events": {"journal_url": f"{base}{c.journal_path}"},
        "state": state,
    }
    if bulk is not None:
        env["campaign"]["sftp"], env["bulk"] = bulk.config()
    if ca_file is not None:
        env["ca_file"] = str(ca_file)
    document: dict[str, Any] = {"version": 1, "mappings": mappings}
    if snapshots is not None:
        document["snapshots"] = snapshots
    document["environments"] = {"emulator": env}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `mapsync emulate --write-config`: the local emulator, loopback only.\n"
                    "# Its client secrets are the emulator's fixed throw-away values, not real credentials.\n"
                    + yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class Served:
    """A running server: its base URL, the CA file clients must trust, and how to stop it."""

    base_url: str
    ca_file: Path
    port: int
    _server: Any = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _ca: Any = field(default=None, repr=False)  # keeps the CA's temp dir (and ca_file) alive
    _emulator: Emulator | None = field(default=None, repr=False)  # its SFTP server stops with this one

    def open_connections(self) -> int:
        """Client connections the server holds open now (a client that never closes its session shows here)."""
        return len(self._server.server_state.connections)

    def client_ssl(self) -> ssl.SSLContext:
        """What an httpx client passes as ``verify=`` to trust this server (httpx deprecates a path there)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> None:
        if self._emulator is not None:
            self._emulator.stop_sftp()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def _uvicorn_server(emulator: Emulator, host: str, port: int, ca: Any) -> Any:
    import uvicorn

    # A client that keeps a TLS connection idle would hold a graceful shutdown until its TLS close times out.
    config = uvicorn.Config(emulator.app, host=host, port=port, log_level="warning", lifespan="off",
                            date_header=False,  # the services' Date comes from SetupMiddleware (clock skew)
                            timeout_graceful_shutdown=2, **ca.ssl_kwargs(host))
    return uvicorn.Server(config)


def start_in_thread(emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0, ca: Any = None,
                    sftp_port: int = 0) -> Served:
    """Serve over TLS in a background thread (tests, benchmarks), and the SFTP server unless the emulator
    has none. ``port=0`` and ``sftp_port=0`` pick free ports."""
    import socket

    from mapsync.emulators.tls import TestCA

    ca = ca or TestCA()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = _uvicorn_server(emulator, host, bound, ca)
    server.install_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mapsync-emulator")
    thread.start()
    for _ in range(500):  # bounded wait for startup (5 s)
        if server.started:
            break
        threading.Event().wait(0.01)
    served = Served(f"https://{host}:{bound}", Path(ca.ca_pem_path), bound, server, thread, ca, emulator)
    try:
        emulator.start_sftp(host, sftp_port)
    except BaseException:
        served.stop()
        raise
    return served


class PortInUse(OSError):
    """The port is taken by another process: said before anything is seeded or served."""


def bind(host: str, port: int) -> Any:
    """A listening socket on ``host:port``, taken before the (slow) seeding so a busy port is known at once."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of our own last run is no conflict
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"port {port} is in use") from None
        raise
    return sock


def serve(emulator: Emulator, *, host: str = "127.0.0.1", port: int = 8443, ca: Any = None,
          on_ready: Callable[[str, Path], None] | None = None, sock: Any = None, sftp_port: int = 0) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, then stop cleanly. ``sock``: a socket from ``bind``.
    The SFTP server (unless the emulator has none) listens on ``sftp_port`` (0: a free one) meanwhile; a
    busy ``sftp_port`` raises ``PortInUse`` before anything is served."""
    from mapsync.emulators.tls import TestCA

    ca = ca or TestCA()
    sock = sock if sock is not None else bind(host, port)
    server = _uvicorn_server(emulator, host, port, ca)

    try:
        emulator.start_sftp(host, sftp_port)
    except OSError as exc:
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"port {sftp_port} is in use") from None
        raise

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        server.install_signal_handlers = lambda: None
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready(f"https://{host}:{port}", Path(ca.ca_pem_path))
        await task

    try:
        asyncio.run(run())
    finally:
        emulator.stop_sftp()
