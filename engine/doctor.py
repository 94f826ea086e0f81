"""``mapsync doctor``: an environment's setup checked against the live services, one finding per step.

The steps are those of docs/operations.md (sections 1 and 2, after Adobe's "Configure Microsoft Dynamics 365"
page): the Entra ID app registration and its secret, the Dataverse application user and its role, the tables
the mappings use (the event flows' activity tables), change tracking on every table a flow reads, the
alternate key the event flows write by, the Adobe credential, the Campaign organization and every mapped
resource and field, the bulk path's SFTP storage and import workflows when the environment configures them
(section 10), the events journal, the state store, and the clocks. What the mappings need is read from
the mappings themselves (``needs_of``); each check says what it found and, when it fails, the exact step that
fixes it. A check that depends on a failed one is reported as skipped, naming the check it waits for.

Nothing is written to the services. The state store gets one meta row written and deleted in a transaction.
Credentials never appear in a finding: the auth providers' messages are scrubbed, and findings only quote ids.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapsync.engine.errors import ConfigError, ConnectorError, MapsyncError, ServiceDown

if TYPE_CHECKING:
    import httpx

    from mapsync.dsl.compiler import CompiledFlow
    from mapsync.dsl.plan import CompiledProject
    from mapsync.dsl.schema import Catalog, FieldSchema
    from mapsync.engine.config import Environment

__all__ = ["MAX_CLOCK_SKEW_SECONDS", "Check", "Needs", "diagnose", "needs_of"]

MAX_CLOCK_SKEW_SECONDS = 300.0  # Entra ID and IMS tolerate about five minutes between clocks
OPS = "docs/operations.md"
# Fail fast: a doctor waits for no outage, it reports it.
_QUICK = {"max_retries": 1, "outage_seconds": 10.0, "timeout_seconds": 20.0}
_SHALLOW_DEPTHS = {"Basic": "User", "Local": "Business Unit"}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist: ``ok`` is True (✓), False (✗) or None (skipped: ``detail`` says why)."""

    check: str
    ok: bool | None
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def skipped(check: str, waits_for: str) -> Check:
    return Check(check, None, f"skipped: needs {waits_for} to pass first")


# -- what the mappings need ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Needs:
    """What the mappings ask of the services. Each privilege and field carries the flows that need it."""

    d365_tables: dict[str, set[str]] = field(default_factory=dict)  # table -> users (flows, opt-outs)
    d365_reads: dict[str, set[str]] = field(default_factory=dict)  # tables read: change tracking, Read
    privileges: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (access, table) -> users
    keys: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # table -> (key column, flows)
    activities: set[str] = field(default_factory=set)
    campaign_fields: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # resource -> field -> users
    events: set[str] = field(default_factory=set)  # flows reading the journal


def needs_of(project: CompiledProject, catalog: Catalog) -> Needs:
    needs = Needs()
    for name, flow in sorted(project.flows.items()):
        user = f"flow {name}"
        source, target = flow.source, flow.target
        if source.system == "d365":
            _add(needs.d365_tables, source.name, user)
            _add(needs.d365_reads, source.name, user)
            _add(needs.privileges, ("Read", source.name), user)
        elif source.name.startswith("events."):
            needs.events.add(name)
        else:
            _field(needs, source.name, flow.key_source, user)
        if target.system == "d365":
            _d365_target(needs, catalog, flow, user)
        elif target.system == "campaign":
            _field(needs, target.name, flow.key_target, user)
            for path in (*flow.target_fields, *flow.on_delete.values):
                _field(needs, target.name, path, user)
    for name, rule in sorted(project.optouts.items()):
        user = f"opt-out {name}"
        table = rule.d365_table
        _add(needs.d365_tables, table, user)
        _add(needs.d365_reads, table, user)
        _add(needs.privileges, ("Read", table), user)
        if rule.direction.value != "d365-to-campaign":
            _add(needs.privileges, ("Write", table), f"{user} (writes {rule.d365_field})")
        _field(needs, rule.campaign_table, rule.campaign_field, user)
    return needs


def _d365_target(needs: Needs, catalog: Catalog, flow: CompiledFlow, user: str) -> None:
    table = flow.target.name
    schema = catalog.table("d365", table)
    _add(needs.d365_tables, table, user)
    accesses = {"create": ("Create", "Read"), "update": ("Write", "Read")}.get(flow.mode, ("Create", "Write", "Read"))
    for access in accesses:
        _add(needs.privileges, (access, table), user)
    if schema is not None and schema.is_activity:
        needs.activities.add(table)
    for path in flow.target_fields:
        column = schema.fields.get(path) if schema is not None else None
        if column is not None and column.targets:
            _add(needs.privileges, ("Append", table), user)
            for other in column.targets:  # a record points at another: Append on it, Append To on the other
                _add(needs.privileges, ("AppendTo", other), f"{user} ({path})")
    column = flow.key_target
    flows = needs.keys.get(table, (column, set()))[1]
    needs.keys[table] = (column, flows | {user})


def _field(needs: Needs, resource: str, path: str | None, user: str) -> None:
    if path:
        needs.campaign_fields.setdefault(resource, {}).setdefault(path, set()).add(user)


def _add(target: dict[Any, set[str]], key: Any, user: str) -> None:
    target.setdefault(key, set()).add(user)


def _users(users: Iterable[str]) -> str:
    return ", ".join(sorted(users))


# -- the checks ----------------------------------------------------------------------------------------

@dataclass
class _Run:
    env: Environment
    needs: Needs
    checks: list[Check] = field(default_factory=list)
    dates: list[tuple[str, str, float]] = field(default_factory=list)  # (service, Date header, local time)
    clock: Callable[[], float] = time.time

    @property
    def prefix(self) -> str:
        return f"environments.{self.env.name}"

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def saw(self, service: str, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if date:
            try:  # the service read its clock between our send and our receipt: take the middle
                trip = response.elapsed.total_seconds()
            except RuntimeError:  # no elapsed time on a response not read to the end
                trip = 0.0
            self.dates.append((service, date, self.clock() - trip / 2))


async def diagnose(env: Environment, needs: Needs, *, catalog: Catalog | None = None, transport: Any = None,
                   msal_http_client: Any = None, clock: Callable[[], float] = time.time) -> list[Check]:
    """Every check of ``env`` against its live services, in the order of the setup steps."""
    from mapsync.engine.connectors import build_connectors

    run = _Run(env, needs, clock=clock)
    connectors = build_connectors(_quick(env), catalog=catalog, transport=transport,
                                  msal_http_client=msal_http_client)
    try:
        await _dataverse(run, connectors.d365)
        ims_ok = await _campaign(run, connectors.campaign)
        await _bulk(run, connectors.campaign, ims_ok)
        await _journal(run, connectors.events, ims_ok)
    finally:
        await connectors.aclose()
    run.add(await asyncio.to_thread(_state, env))
    run.add(_clock_check(run))
    return run.checks


def _quick(env: Environment) -> Environment:
    def fast(settings: Any) -> Any:
        return None if settings is None else replace(settings, limits=replace(settings.limits, **_QUICK))

    return replace(env, d365=fast(env.d365), campaign=fast(env.campaign), events=fast(env.events))


def _secret_step(where: str, secret: Any) -> str:
    source = getattr(secret, "source", "")
    if source:
        return f"put its value in {source}, which {where}.client_secret reads"
    return f"set {where}.client_secret to a ${{VARIABLE}} and put the value in that variable"


def _unreachable(exc: MapsyncError) -> bool:
    return isinstance(exc, ServiceDown) or (isinstance(exc, ConnectorError) and exc.status is None)


# -- Dynamics 365 --------------------------------------------------------------------------------------

async def _dataverse(run: _Run, d365: Any) -> None:
    names = ("entra.tenant", "entra.client_secret", "d365.application_user", "d365.tables", "d365.privileges",
             "d365.change_tracking", "d365.alternate_keys")
    if run.env.d365 is None or d365 is None:
        if run.needs.d365_tables:
            run.add(Check("d365", False, f"the mappings use Dynamics 365 ({_users(run.needs.d365_tables)}) but "
                                         "the environment configures no d365 section",
                          f"add {run.prefix}.d365 (url, tenant_id, client_id, client_secret): {OPS} 1.4"))
        return
    failed = await _entra(run, d365.http.auth)
    if failed is not None:
        for name in names[names.index(failed) + 1:]:
            run.add(skipped(name, failed))
        return
    user_id = await _application_user(run, d365.http)
    if user_id is None:
        for name in names[3:]:
            run.add(skipped(name, "d365.application_user"))
        return
    try:
        definitions = await _tables(run, d365.http)
        await _privileges(run, d365.http, user_id, definitions)
        _change_tracking(run, definitions)
        await _alternate_keys(run, d365.http, definitions)
    except MapsyncError as exc:  # the org stopped answering half-way: the rest cannot be checked
        done = {c.check for c in run.checks}
        run.add(Check("d365", False, f"Dataverse at {run.env.d365.url} stopped answering: {exc}",
                      "run doctor again when Dataverse answers"))
        for name in names[3:]:
            if name not in done:
                run.add(skipped(name, "d365"))


async def _entra(run: _Run, entra: Any) -> str | None:
    """The tenant and the client secret, from one token request; the name of the check that failed, if one did."""
    s = run.env.d365
    assert s is not None
    where = f"{run.prefix}.d365"
    try:
        await entra.token()
    except ConfigError as exc:
        setting = (exc.setting or "").rsplit(".", 1)[-1]
        if setting in ("tenant_id", "authority_host", "ca_file"):
            fix = {
                "tenant_id": f"set {where}.tenant_id to the Directory (tenant) ID on the overview page of the app "
                             f"registration (Azure portal → Microsoft Entra ID → App registrations): {OPS} 1.1",
                "authority_host": f"let this machine reach {s.authority_host} over HTTPS (DNS, proxy, firewall)",
                "ca_file": f"set {run.prefix}.ca_file to the CA bundle that signed the certificate of "
                           f"{s.authority_host}",
            }[setting]
            run.add(Check("entra.tenant", False, str(exc), fix))
            return "entra.tenant"
        run.add(Check("entra.tenant", True, f"Entra ID answers for tenant {s.tenant_id} at {s.authority_host}"))
        fix = {
            "client_id": f"set {where}.client_id to the Application (client) ID on the app registration's "
                         f"overview page: {OPS} 1.1",
            "url": f"set {where}.url to the environment URL (Power Platform admin center → Environments → the "
                   "environment → Environment URL), without /api/data",
        }.get(setting, f"Azure portal → Microsoft Entra ID → App registrations → the app {s.client_id} → "
                       f"Certificates & secrets → New client secret; {_secret_step(where, s.client_secret)}: {OPS} 1.1")
        run.add(Check("entra.client_secret", False, str(exc), fix))
        return "entra.client_secret"
    except ConnectorError as exc:
        run.add(Check("entra.tenant", False, f"Entra ID at {s.authority_host} did not answer: {exc}",
                      f"let this machine reach {s.authority_host} over HTTPS, then run doctor again"))
        return "entra.tenant"
    run.add(Check("entra.tenant", True, f"Entra ID answers for tenant {s.tenant_id} at {s.authority_host}"))
    run.add(Check("entra.client_secret", True,
                  f"a token for {s.scope} was issued to client {s.client_id}; Entra ID does not say when the secret "
                  "expires: see its expiry under the app registration's Certificates & secrets"))
    return None


async def _application_user(run: _Run, http: Any) -> str | None:
    s = run.env.d365
    assert s is not None
    name = "d365.application_user"
    create = (f"Power Platform admin center → Environments → the environment → Settings → Users + permissions → "
              f"Application users → + New app user → + Add an app → {s.client_id}, pick the business unit and the "
              f"mapsync security role → Create: {OPS} 1.2")
    enable = ("Power Platform admin center → Environments → the environment → Settings → Users + permissions → "
              f"Application users → the app user of {s.client_id} → Activate")
    try:
        who = await http.request("GET", "WhoAmI")
        run.saw("d365", who)
        user_id = str(who.json()["UserId"])
        row = (await http.request("GET", f"systemusers({user_id})",
                                  params={"$select": "isdisabled,accessmode,applicationid,fullname"})).json()
    except MapsyncError as exc:
        text = str(exc)
        if _unreachable(exc):
            run.add(Check(name, False, f"Dataverse at {s.url} did not answer: {text}",
                          f"check {run.prefix}.d365.url and that this machine can reach it"))
        elif "is disabled" in text:
            run.add(Check(name, False, f"the application user of client {s.client_id} is disabled ({text})", enable))
        elif "not a member" in text or getattr(exc, "status", None) in (401, 403):
            run.add(Check(name, False, f"Dataverse admits no application user for client {s.client_id} in "
                                       f"{s.url} ({text})", create))
        else:
            run.add(Check(name, False, text, create))
        return None
    mode = row.get("accessmode")
    mode_text = "non-interactive" if mode == 4 else f"access mode {mode} (an application user's is 4, non-interactive)"
    if row.get("isdisabled"):
        run.add(Check(name, False, f"the application user {user_id} of client {s.client_id} is disabled", enable))
        return None
    run.add(Check(name, True, f"application user {user_id} of client {s.client_id}: enabled, {mode_text}"))
    return user_id


async def _tables(run: _Run, http: Any) -> dict[str, dict[str, Any] | None]:
    """EntityDefinitions of every table the mappings use (None: the org has no such table)."""
    found: dict[str, dict[str, Any] | None] = {}
    for table in sorted(run.needs.d365_tables):
        resp = await _get(http, f"EntityDefinitions(LogicalName='{table}')",
                          {"$select": "LogicalName,SchemaName,IsActivity,ChangeTrackingEnabled"})
        found[table] = resp.json() if resp.status_code == 200 else None
    missing = [t for t, d in found.items() if d is None]
    if missing:
        lines = [f"{t} ({'activity table of ' if t in run.needs.activities else ''}{_users(run.needs.d365_tables[t])})"
                 for t in missing]
        activity = [t for t in missing if t in run.needs.activities]
        fix = ("install the solution that holds " + ", ".join(missing) + " in the environment (Power Apps → "
               "Solutions → Import)" + (f"; the activity tables ({', '.join(activity)}) come with the email-event "
                                        "solution of the integration" if activity else "")
               + ", then `mapsync schema pull` and `mapsync validate`")
        run.add(Check("d365.tables", False, "not in the organization: " + "; ".join(lines), fix))
    else:
        activities = sorted(run.needs.activities)
        run.add(Check("d365.tables", True, f"{len(found)} table(s) installed"
                      + (f", activity tables {', '.join(activities)} among them" if activities else "")))
    return found


async def _get(http: Any, url: str, params: Mapping[str, str] | None = None) -> httpx.Response:
    return await http.request("GET", url, params=params, accept=(404,))


async def _privileges(run: _Run, http: Any, user_id: str, definitions: Mapping[str, Any]) -> None:
    name = "d365.privileges"
    reply = (await http.request("GET", f"systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()")).json()
    held = {str(p.get("PrivilegeName", "")).lower(): str(p.get("Depth", "")) for p in reply.get("RolePrivileges") or []}
    missing, shallow = [], []
    for (access, table), users in sorted(run.needs.privileges.items()):
        definition = definitions.get(table)
        if table in definitions and definition is None:
            continue  # the table itself is missing: d365.tables says so
        schema_name = (definition or {}).get("SchemaName") or table
        privilege = f"prv{access}{schema_name}"
        depth = held.get(privilege.lower())
        if depth is None:
            missing.append((privilege, access, table, users))
        elif depth in _SHALLOW_DEPTHS:
            shallow.append((privilege, access, table, users, _SHALLOW_DEPTHS[depth]))
    if not missing and not shallow:
        run.add(Check(name, True, f"the application user's roles grant the {len(run.needs.privileges)} "
                                  "privilege(s) the mappings need, none below Parent: Child Business Units level"))
        return
    parts = [f"{p} missing ({_users(u)})" for p, _a, _t, u in missing]
    parts += [f"{p} only at {level} level ({_users(u)})" for p, _a, _t, u, level in shallow]
    by_table: dict[str, list[str]] = {}
    for _p, access, table, *_rest in [*missing, *shallow]:
        label = _access_label(access)
        if label not in by_table.setdefault(table, []):
            by_table[table].append(label)
    grants = [f"{(definitions.get(t) or {}).get('SchemaName') or t}: {', '.join(a)}" for t, a in sorted(by_table.items())]
    run.add(Check(name, False, "; ".join(parts),
                  "Power Platform admin center → Environments → the environment → Settings → Users + permissions "
                  "→ Security roles → the application user's role (e.g. mapsync) → grant at Organization level: "
                  + "; ".join(grants) + f": {OPS} 1.3"))


def _access_label(access: str) -> str:
    return {"AppendTo": "Append To"}.get(access, access)


def _change_tracking(run: _Run, definitions: Mapping[str, Any]) -> None:
    name = "d365.change_tracking"
    off, unknown = [], []
    for table in sorted(run.needs.d365_reads):
        definition = definitions.get(table)
        if definition is None:
            unknown.append(table)
        elif not definition.get("ChangeTrackingEnabled"):
            off.append(table)
    checked = [t for t in sorted(run.needs.d365_reads) if t not in unknown]
    if not run.needs.d365_reads:
        run.add(Check(name, True, "no flow reads Dynamics 365"))
    elif off:
        run.add(Check(name, False, "off on " + "; ".join(f"{t} ({_users(run.needs.d365_reads[t])})" for t in off)
                      + ": mapsync falls back to a modifiedon watermark, which cannot see deletes",
                      "Power Apps (make.powerapps.com) → Tables → " + ", ".join(off)
                      + f" → Properties → Advanced options → Track changes → Save: {OPS} 1.3"))
    elif not checked:
        run.add(skipped(name, "d365.tables"))
    else:
        run.add(Check(name, True, "on for " + ", ".join(checked)
                      + (f" ({', '.join(unknown)}: see d365.tables)" if unknown else "")))


async def _alternate_keys(run: _Run, http: Any, definitions: Mapping[str, Any]) -> None:
    name = "d365.alternate_keys"
    if not run.needs.keys:
        run.add(Check(name, True, "no flow writes to Dynamics 365 by an alternate key"))
        return
    problems, fixes, fine = [], [], []
    for table, (column, users) in sorted(run.needs.keys.items()):
        if definitions.get(table) is None:
            problems.append(f"{table}: not installed (see d365.tables)")
            continue
        keys = (await http.request("GET", f"EntityDefinitions(LogicalName='{table}')/Keys",
                                   params={"$select": "LogicalName,KeyAttributes,EntityKeyIndexStatus"})).json()
        key = next((k for k in keys.get("value") or [] if list(k.get("KeyAttributes") or []) == [column]), None)
        if key is None:
            problems.append(f"{table}: no alternate key on {column} ({_users(users)}); a replayed event would "
                            "make a duplicate activity")
            fixes.append(f"Power Apps → Tables → {table} → Keys → New key → column {column} → Save")
            continue
        status = str(key.get("EntityKeyIndexStatus"))
        if status == "Active":
            fine.append(f"{table}.{key.get('LogicalName')} ({column})")
        elif status == "Failed":
            problems.append(f"{table}: key {key.get('LogicalName')} on {column} is Failed (its index could not be "
                            "built, usually because rows share a value)")
            fixes.append(f"remove the duplicate {column} values in {table}, then reactivate the key "
                         f"{key.get('LogicalName')} (the ReactivateEntityKey message, or delete it and add it again "
                         f"under Power Apps → Tables → {table} → Keys)")
        else:
            problems.append(f"{table}: key {key.get('LogicalName')} on {column} is {status}, not yet Active")
            fixes.append(f"wait until Dataverse has built the index of {table}.{key.get('LogicalName')} "
                         "(Power Apps → Tables → Keys shows Active), then run doctor again")
    if problems:
        run.add(Check(name, False, "; ".join(problems), "; ".join(fixes) or "see d365.tables"))
    else:
        run.add(Check(name, True, "active: " + ", ".join(fine)))


# -- Adobe: IMS, Campaign, the journal ------------------------------------------------------------------

async def _campaign(run: _Run, campaign: Any) -> bool:
    """The IMS credential, the organization and the mapped resources; True when IMS issued a token."""
    s = run.env.campaign
    if s is None or campaign is None:
        if run.needs.campaign_fields or run.needs.events:
            run.add(Check("ims.credentials", False, "the mappings use Campaign but the environment configures no "
                                                    "campaign section",
                          f"add {run.prefix}.campaign (organization, client_id, client_secret): {OPS} 2.1"))
        return False
    where = f"{run.prefix}.campaign"
    try:
        await campaign.http.auth.token()
    except (ConfigError, ConnectorError) as exc:
        setting = (getattr(exc, "setting", None) or "").rsplit(".", 1)[-1]
        fix = {
            "client_id": f"copy the Client ID of the OAuth Server-to-Server credential (Adobe Developer Console → "
                         f"the project → the credential) into {where}.client_id: {OPS} 2.1",
            "scopes": f"set {where}.scopes to the scopes the credential lists in the Adobe Developer Console",
            "ims_url": f"let this machine reach {s.ims_url} over HTTPS (DNS, proxy, firewall)",
            "ca_file": f"set {run.prefix}.ca_file to the CA bundle that signed the certificate of {s.ims_url}",
        }.get(setting, f"Adobe Developer Console → the project → OAuth Server-to-Server → Retrieve client secret (or "
                       f"generate a new one); {_secret_step(where, s.client_secret)}: {OPS} 2.1")
        run.add(Check("ims.credentials", False, str(exc), fix))
        run.add(skipped("campaign.organization", "ims.credentials"))
        run.add(skipped("campaign.resources", "ims.credentials"))
        return False
    run.add(Check("ims.credentials", True, f"Adobe IMS issued a token to client {s.client_id} "
                                           f"(scopes {','.join(s.scopes)})"))
    if not await _organization(run, campaign.http):
        run.add(skipped("campaign.resources", "campaign.organization"))
        return True
    try:
        await _resources(run, campaign)
    except MapsyncError as exc:
        run.add(Check("campaign.resources", False, f"Campaign stopped answering: {exc}",
                      "run doctor again when Campaign answers"))
    return True


async def _organization(run: _Run, http: Any) -> bool:
    s = run.env.campaign
    assert s is not None
    name = "campaign.organization"
    try:
        resp = await http.request("GET", "profileAndServices/resourceType/profile", accept=(403, 404))
    except MapsyncError as exc:
        run.add(Check(name, False, f"Campaign at {s.api_base} did not answer: {exc}",
                      f"check {run.prefix}.campaign.base_url and that this machine can reach it"))
        return False
    run.saw("campaign", resp)
    if resp.status_code == 200:
        run.add(Check(name, True, f"organization {s.organization} answers at {s.api_base}"))
        return True
    run.add(Check(name, False, f"{s.api_base} answers HTTP {resp.status_code} for the profile resource",
                  f"set {run.prefix}.campaign.organization to the Campaign tenant (the <ORGANIZATION> in "
                  "https://mc.adobe.io/<ORGANIZATION>/campaign), and check that the credential's product profile "
                  f"gives access to that instance (Adobe Admin Console → Campaign → product profiles): {OPS} 2.1"))
    return False


async def _resources(run: _Run, campaign: Any) -> None:
    name = "campaign.resources"
    wanted = run.needs.campaign_fields
    if not wanted:
        run.add(Check(name, True, "the mappings map no Campaign resource"))
        return
    schemas = {t.name: t for t in await campaign.fetch_schema(sorted(wanted), skip_missing=True)}
    problems, fixes = [], []
    for resource, fields in sorted(wanted.items()):
        schema = schemas.get(resource)
        if schema is None:
            users = set().union(*fields.values())
            problems.append(f"resource {resource} not found ({_users(users)})")
            fixes.append(f"publish the custom resource {resource} with its API extended (Campaign → Administration "
                         f"→ Development → Custom resources → {resource} → Publish, \"Extend the API\" ticked)")
            continue
        absent = [path for path in sorted(fields) if _field_at(schema.fields, path) is None]
        if absent:
            problems.append(f"{resource} has no field " + ", ".join(f"{p} ({_users(fields[p])})" for p in absent))
            fixes.append(f"add {', '.join(absent)} to the {resource} resource (Campaign → Administration → "
                         f"Development → Custom resources → {resource} or its extension) and publish it")
    if problems:
        run.add(Check(name, False, "; ".join(problems), "; ".join(fixes) + ", then `mapsync schema pull`"))
    else:
        count = sum(len(f) for f in wanted.values())
        run.add(Check(name, True, f"{', '.join(sorted(wanted))}: all {count} mapped field(s) exist"))


# -- Campaign bulk loads: the SFTP storage and the import workflows -------------------------------------

async def _bulk(run: _Run, campaign: Any, ims_ok: bool) -> None:
    """Only when the environment configures the bulk path (``campaign.sftp`` or ``bulk.workflows``)."""
    sftp = run.env.campaign.sftp if run.env.campaign is not None else None
    workflows = run.env.bulk.workflows
    if sftp is None and not workflows:
        return
    where = f"{run.prefix}.campaign.sftp"
    if sftp is None:
        run.add(Check("campaign.sftp", False, "bulk.workflows names import workflows but there is no campaign.sftp",
                      f"add {where} (host, port, username, password or private_key, host_key): {OPS} 10"))
    else:
        await _sftp(run, sftp, where)
    if not workflows:
        run.add(Check("campaign.workflows", False, "campaign.sftp is set but bulk.workflows names no import workflow",
                      f"add {run.prefix}.bulk.workflows (resource: {{workflow, signal}}): {OPS} 10"))
    elif not ims_ok or campaign is None:
        run.add(skipped("campaign.workflows", "ims.credentials"))
    else:
        await _workflows(run, campaign, workflows)
    run.add(await asyncio.to_thread(_work_dir, run.env.bulk.work_dir, f"{run.prefix}.bulk.work_dir"))


def _work_dir(folder: Path, setting: str) -> Check:
    """The folder a load writes its files in: made if missing, a file written and removed, its free space."""
    from mapsync.engine.bulk.files import ROW_BYTES

    probe = folder / f".mapsync-doctor-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check("bulk.work_dir", False, f"cannot write in {folder} ({exc.strerror or exc})",
                     f"set {setting} to a folder this user can write, with room for the load's files: {OPS} 10")
    return Check("bulk.work_dir", True, f"{folder} is writable; {free / 1e9:,.1f} GB free, room for about "
                                        f"{free // ROW_BYTES / 1e6:,.1f} M records in a load's files")


async def _sftp(run: _Run, sftp: Any, where: str) -> None:
    from mapsync.engine.bulk.sftp import SftpStorage

    try:
        async with SftpStorage(sftp, setting=where) as storage:
            missing = await storage.missing_folders()
    except ConfigError as exc:
        run.add(Check("campaign.sftp", False, str(exc), f"fix {exc.setting or where}: {OPS} 10"))
        return
    except MapsyncError as exc:
        run.add(Check("campaign.sftp", False, str(exc),
                      f"check {where}.host and .port and that this machine can reach the SFTP server"))
        return
    if missing:
        run.add(Check("campaign.sftp", False, f"{sftp.host}:{sftp.port} has no folder {', '.join(missing)}",
                      f"create the folder(s) on the Campaign SFTP storage, or set {where}.incoming/.outgoing "
                      f"to the folders the import workflow uses: {OPS} 10"))
        return
    run.add(Check("campaign.sftp", True, f"{sftp.username}@{sftp.host}:{sftp.port} shows the pinned host key; "
                                         f"{sftp.incoming} and {sftp.outgoing} exist"))


async def _workflows(run: _Run, campaign: Any, workflows: Mapping[str, Any]) -> None:
    from mapsync.engine.bulk.workflow import read_execution

    problems, fixes, fine = [], [], []
    for resource, spec in sorted(workflows.items()):
        try:
            execution = await read_execution(campaign.http, spec.workflow, spec.signal)
        except MapsyncError as exc:
            problems.append(f"{resource}: workflow {spec.workflow} cannot be read ({exc})")
            fixes.append(f"set bulk.workflows.{resource}.workflow to the ID of its import workflow (Campaign → "
                         "Marketing activities → the workflow → its ID)")
            continue
        if execution.trigger is None:
            problems.append(f"{resource}: workflow {spec.workflow} has no External signal activity {spec.signal!r}")
            fixes.append(f"set bulk.workflows.{resource}.signal to the name of the workflow's External signal "
                         "activity (it must declare the parameter fileMask)")
        elif execution.state not in ("started", "running"):
            problems.append(f"{resource}: workflow {spec.workflow} is {execution.state or 'not running'}")
            fixes.append(f"start the workflow {spec.workflow} in Campaign: a signal only reaches a running workflow")
        else:
            fine.append(f"{resource} → {spec.workflow}")
    if problems:
        run.add(Check("campaign.workflows", False, "; ".join(problems), "; ".join(fixes) + f": {OPS} 10"))
    else:
        run.add(Check("campaign.workflows", True, "running, with their signal: " + ", ".join(fine)))


def _field_at(fields: Mapping[str, FieldSchema], path: str) -> FieldSchema | None:
    node: FieldSchema | None = None
    for part in path.split("."):
        node = fields.get(part)
        if node is None:
            return None
        fields = node.fields
    return node


async def _journal(run: _Run, events: Any, ims_ok: bool) -> None:
    name = "events.journal"
    if run.env.events is None or events is None:
        if run.needs.events:
            run.add(Check(name, False, f"flows {', '.join(sorted(run.needs.events))} read email events but the "
                                       "environment configures no events.journal_url",
                          f"add {run.prefix}.events.journal_url: the journaling API URL of the project's event "
                          f"registration (Adobe Developer Console): {OPS} 2.2"))
        return
    if not ims_ok:
        run.add(skipped(name, "ims.credentials"))
        return
    url = run.env.events.journal_url
    try:
        resp = await events.http.request("GET", url, params={"limit": "1"}, accept=(204, 403, 404))
    except MapsyncError as exc:
        run.add(Check(name, False, f"the journal did not answer: {exc}",
                      "check Adobe's status page and that this machine can reach "
                      f"{_host(url)}; the journal keeps 7 days of events, so nothing is lost if it comes back soon"))
        return
    run.saw("events", resp)
    if resp.status_code in (200, 204):
        run.add(Check(name, True, f"the journal answers at {_host(url)} "
                                  f"({'events waiting' if resp.status_code == 200 else 'no events yet'})"))
        return
    run.add(Check(name, False, f"the journal answers HTTP {resp.status_code}",
                  f"set {run.prefix}.events.journal_url to the journaling API URL of the project's event registration "
                  f"(Adobe Developer Console → the project → the Adobe Campaign Standard event → Journaling): "
                  f"{OPS} 2.2"))


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


# -- local: state store and clocks ---------------------------------------------------------------------

def _state(env: Environment) -> Check:
    from mapsync.engine.redact import redact_url
    from mapsync.engine.state.base import open_store

    name = "state.writable"
    shown = redact_url(env.state_url)
    try:
        with open_store(env.state_url, password=env.state_password) as store, store.transaction():
            store.set_meta("doctor.write_check", str(time.time()))
            store.delete_meta("doctor.write_check")
    except Exception as exc:  # whatever stops a write (permissions, a full disk, a refused login) is the finding
        return Check(name, False, f"cannot write {shown}: {type(exc).__name__}: {exc}",
                     f"make {shown} writable by this user, or point {f'environments.{env.name}.state'} at a store "
                     f"it can write: {OPS} 3")
    return Check(name, True, f"{shown} is writable")


def _clock_check(run: _Run) -> Check:
    name = "clock.skew"
    worst: tuple[float, str] | None = None
    for service, header, local in run.dates:
        try:
            remote = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError):
            continue
        skew = local - remote - 0.5  # a Date header counts whole seconds: its second's middle is the best guess
        if worst is None or abs(skew) > abs(worst[0]):
            worst = (skew, service)
    if worst is None:
        return Check(name, None, "skipped: no service answered with a Date header to compare this clock with")
    skew, service = worst
    if abs(skew) <= MAX_CLOCK_SKEW_SECONDS:
        return Check(name, True, f"within {max(1, round(abs(skew)))} s of the services' clocks")
    direction = "ahead of" if skew > 0 else "behind"
    label = {"d365": "Dataverse", "campaign": "Campaign", "events": "the events journal"}.get(service, service)
    return Check(name, False, f"this machine's clock is {round(abs(skew))} s {direction} the clock of {label} (more than "
                              f"{MAX_CLOCK_SKEW_SECONDS:.0f} s: tokens may be refused as not yet valid or expired)",
                 "synchronise this machine's clock with NTP (e.g. `timedatectl set-ntp true` on systemd hosts)")
