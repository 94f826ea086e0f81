"""Opt-out sync end to end: the real connectors against the in-process emulators, a real SQLite state store.

Pairs are made the way the contacts flow makes them: a profile created in Campaign for a contact (through
the Campaign connector), and the key-map entry contactid -> PKey written to the store. Users act through the
emulators' control endpoints (edit a contact as a CRM user, opt a profile out as a Campaign user).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.dsl import ast
from mapsync.dsl.parser import parse
from mapsync.dsl.schema import load_catalog
from mapsync.emulators.server import Emulator
from mapsync.engine.acknowledge import TRANSIENT_PREFIX
from mapsync.engine.auth import ImsTokenProvider
from mapsync.engine.config import CampaignSettings, D365Settings, Secret, ServiceLimits
from mapsync.engine.connectors import Connectors
from mapsync.engine.connectors.base import WriteOp
from mapsync.engine.connectors.campaign import CampaignConnector, campaign_headers
from mapsync.engine.connectors.d365 import ODATA_HEADERS, D365Connector
from mapsync.engine.dead_letter_kinds import kind
from mapsync.engine.http import HttpClient
from mapsync.engine.optout import OptOutResult, OptOutSync, build_optout_syncs
from mapsync.engine.state import DeadLetterStatus, KeyEntry, StateStore, open_store
from tests.paths import FIXTURE_MAPPINGS

BASE = "https://emulator.test"
ROOT = Path(__file__).resolve().parents[2]


class EmulatorTokens:
    """Dataverse bearer tokens from the emulator's own Entra ID issuer (MSAL itself is tested in test_auth)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.current: str | None = None

    async def token(self, *, stale: str | None = None) -> str:
        if self.current is None or stale == self.current:
            self.current, _ = self.emulator.dataverse.issuer.issue(self.emulator.credentials.d365_client_id,
                                                                    f"{BASE}/.default")
        return self.current


class RejectProfiles:
    """The emulator behind a gateway that refuses updates of chosen profiles, as a service rejects one record."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pkeys: set[str] = set()
        self.busy: set[str] = set()  # profiles whose updates are answered 429 (a transient refusal), every time
        self.busy_answers = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "PATCH" and any(
                scope["path"].endswith("/" + p) for p in self.pkeys):
            body = json.dumps({"error_code": "XTK-170006", "message": "profile is locked by a workflow"}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["method"] == "PATCH" and any(
                scope["path"].endswith("/" + p) for p in self.busy):
            self.busy_answers += 1
            body = json.dumps({"error_code": "SVC-429", "message": "too many requests"}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"0")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def rule(text: str) -> ast.OptOut:
    result = parse(text, "optout.map")
    assert not result.diagnostics, result.diagnostics
    [decl] = [d for d in result.module.decls if isinstance(d, ast.OptOut)]
    return decl


def shipped_rule() -> ast.OptOut:
    return rule((FIXTURE_MAPPINGS / "optout.map").read_text(encoding="utf-8"))


def custom_rule(direction: str = "both", conflict: str = "optout-wins") -> ast.OptOut:
    return rule("optout email {\n  d365.contact.donotbulkemail <-> campaign.profile.blackListEmail\n"
                f"  direction {direction}\n  conflict {conflict}\n  via contacts\n}}\n")


class Rig:
    """Emulator, connectors, control client and state store for one test (inside one event loop)."""

    def __init__(self, tmp_path: Path, *, contacts: int = 40) -> None:
        self.emulator = Emulator(contacts=contacts, faults="none")
        self.gateway = RejectProfiles(self.emulator.app)
        self.transport = httpx.ASGITransport(app=self.gateway)
        creds = self.emulator.credentials
        limits = ServiceLimits(concurrency=4, max_retries=3, batch_size=50)
        d365_settings = D365Settings(url=BASE, tenant_id=creds.tenant_id, client_id=creds.d365_client_id,
                                     client_secret=Secret("unused"), limits=limits)
        d365_http = HttpClient("d365", limits, EmulatorTokens(self.emulator), transport=self.transport,
                               base_url=d365_settings.api_base,
                               headers={k: v for k, v in ODATA_HEADERS.items() if k != "Content-Type"})
        self.d365 = D365Connector(d365_settings, d365_http, load_catalog())
        campaign_settings = CampaignSettings(organization=creds.organization, client_id=creds.campaign_client_id,
                                             client_secret=Secret(creds.campaign_client_secret), ims_url=BASE,
                                             base_url=BASE, limits=limits)
        self.ims = ImsTokenProvider(campaign_settings, transport=self.transport)
        campaign_http = HttpClient("campaign", limits, self.ims, transport=self.transport,
                                   base_url=campaign_settings.api_base, headers=campaign_headers(campaign_settings))
        self.campaign = CampaignConnector(campaign_settings, campaign_http, load_catalog())
        self.control = httpx.AsyncClient(transport=self.transport, base_url=BASE + "/_emulator/")
        self.store: StateStore = open_store(f"sqlite:///{tmp_path / 'state' / 'emulator.sqlite'}")
        self.pairs: dict[str, str] = {}  # contactid -> PKey

    async def close(self) -> None:
        await self.control.aclose()
        await Connectors(self.d365, self.campaign, None).aclose()
        await self.ims.aclose()
        self.store.close()

    def sync(self, optout: ast.OptOut | None = None, *, dry_run: bool = False) -> OptOutSync:
        return OptOutSync(optout or shipped_rule(), d365=self.d365, campaign=self.campaign, store=self.store,
                          dry_run=dry_run)

    # -- making pairs (what the contacts flow does) ----------------------------------------------------

    async def contacts(self, n: int) -> list[str]:
        ids: list[str] = []
        async for page in self.d365.read("contact", ["contactid"]):
            ids += [row["contactid"] for row in page]
        return sorted(ids)[:n]

    async def pair(self, contact_ids: list[str], *, profile_values: dict[str, bool] | None = None) -> list[str]:
        """A profile per contact, opted out like the contact unless ``profile_values`` says otherwise."""
        values = await self.d365_values(contact_ids)
        ops = [WriteOp("create", "profile", {"email": f"pair{i}.{cid[:8]}@example.com", "externalId": cid,
                                             "blackListEmail": (profile_values or {}).get(cid, values[cid])}, ref=cid)
               for i, cid in enumerate(contact_ids)]
        outcomes = await self.campaign.write(ops)
        assert all(o.ok for o in outcomes), outcomes
        entries = [KeyEntry(o.ref, o.target_id, created_by_mapsync=True) for o in outcomes]
        self.store.put_keys("contacts", entries)
        self.pairs.update({e.source_key: str(e.target_id) for e in entries})
        return [str(o.target_id) for o in outcomes]

    # -- users at work ---------------------------------------------------------------------------------

    async def edit_contact(self, contact_id: str, value: bool) -> None:
        resp = await self.control.patch(f"d365/contact/{contact_id}", json={"donotbulkemail": value})
        assert resp.status_code == 200, resp.text

    async def opt_out_in_campaign(self, pkey: str) -> None:
        resp = await self.control.post(f"campaign/profiles/{pkey}/opt-out", json={"channel": "email"})
        assert resp.status_code == 200, resp.text

    async def edit_profile(self, pkey: str, value: bool) -> None:
        """A Campaign user changing the field in the UI (an update like any other, bumping lastModified)."""
        [outcome] = await self.campaign.write([WriteOp("update", "profile", {"blackListEmail": value}, target_id=pkey)])
        assert outcome.ok, outcome

    async def advance(self, seconds: float) -> None:
        resp = await self.control.post("clock", json={"advance_seconds": seconds})
        assert resp.status_code == 200, resp.text

    # -- what the systems hold -------------------------------------------------------------------------

    async def d365_values(self, contact_ids: list[str]) -> dict[str, bool]:
        out: dict[str, bool] = {}
        async for page in self.d365.read("contact", ["contactid", "donotbulkemail"]):
            out.update({r["contactid"]: bool(r["donotbulkemail"]) for r in page if r["contactid"] in contact_ids})
        return out

    async def campaign_values(self, pkeys: list[str]) -> dict[str, bool]:
        resp = await self.control.get("state/campaign/profile", params={"limit": 5000})
        return {r["PKey"]: bool(r.get("blackListEmail")) for r in resp.json()["rows"] if r["PKey"] in pkeys}

    async def both(self, contact_id: str) -> tuple[bool, bool]:
        pkey = self.pairs[contact_id]
        return (await self.d365_values([contact_id]))[contact_id], (await self.campaign_values([pkey]))[pkey]


def scenario(tmp_path: Path, body: Callable[[Rig], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        rig = Rig(tmp_path, **options)
        try:
            await body(rig)
        finally:
            await rig.close()

    asyncio.run(main())


def writes(result: OptOutResult) -> int:
    return result.written_to_d365 + result.written_to_campaign


# ----------------------------------------------------------------------------------------------- tests


def test_opt_outs_cross_both_ways_and_never_bounce_back(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        a, b, c = await rig.contacts(3)
        pa, _pb, _pc = await rig.pair([a, b, c], profile_values={a: False, b: False, c: False})
        for cid in (a, b, c):
            await rig.edit_contact(cid, False)
        first = await rig.sync().run()  # first run: full read, every pair already in step
        assert first.full_read and first.pairs == 3 and writes(first) == 0 and first.failed == 0
        assert first.unpaired > 0  # the other contacts and the seeded profiles have no partner
        assert rig.store.get_cursor("optout:email:d365") is not None
        assert rig.store.optout_pairs("email")

        # A Campaign user opts A out: Dynamics 365 follows.
        await rig.opt_out_in_campaign(pa)
        plan = await rig.sync(dry_run=True).run()
        assert plan.dry_run and [(p.key, p.system, p.after) for p in plan.planned] == [(a, "d365", True)]
        assert await rig.both(a) == (False, True)  # a plan writes nothing
        second = await rig.sync().run()
        assert not second.full_read
        assert (second.campaign_changes_seen, second.d365_changes_seen) == (1, 0)
        assert (second.written_to_d365, second.written_to_campaign) == (1, 0)
        assert await rig.both(a) == (True, True)
        echo = await rig.sync().run()  # mapsync's own write comes back through change tracking: not a change
        assert writes(echo) == 0 and echo.d365_changes_seen == 0 and echo.campaign_changes_seen == 0

        # A CRM user opts B out: Campaign follows; then opts B back in: Campaign follows again.
        await rig.edit_contact(b, True)
        third = await rig.sync().run()
        assert (third.d365_changes_seen, third.written_to_campaign, third.written_to_d365) == (1, 1, 0)
        assert await rig.both(b) == (True, True)
        echo = await rig.sync().run()  # the new lastModified of B's profile is mapsync's own write: not a change
        assert writes(echo) == 0 and echo.d365_changes_seen == 0 and echo.campaign_changes_seen == 0
        await rig.edit_contact(b, False)
        assert (await rig.sync().run()).written_to_campaign == 1
        assert await rig.both(b) == (False, False)
        echo = await rig.sync().run()
        assert writes(echo) == 0 and echo.d365_changes_seen == 0 and echo.campaign_changes_seen == 0
        assert await rig.both(c) == (False, False)

        # An unrelated edit of a paired contact (modifiedon moves, the opt-out does not) is not a change.
        resp = await rig.control.patch(f"d365/contact/{c}", json={"jobtitle": "CEO"})
        assert resp.status_code == 200
        quiet = await rig.sync().run()
        assert writes(quiet) == 0 and quiet.d365_changes_seen == 0

    scenario(tmp_path, body)


FIRST_RUN = dict.fromkeys("xzyw", True)  # never synced: opted out wins under every rule
BOTH_CHANGED = {  # pair -> value of both sides once both changed after a one-way sync, per conflict rule
    "optout-wins": {"x": True, "z": True, "y": True, "w": True},
    "d365-wins": {"x": False, "z": False, "y": False, "w": False},
    "campaign-wins": {"x": True, "z": True, "y": True, "w": True},
    "latest-wins": {"x": False, "z": False, "y": True, "w": True},
}


@pytest.mark.parametrize("conflict", sorted(BOTH_CHANGED))
def test_first_run_differences_go_to_the_opt_out_and_later_conflicts_follow_the_rule(tmp_path: Path,
                                                                                      conflict: str) -> None:
    """First run (no synced state): x, w opted out in D365 only, y, z in Campaign only; x and z were last
    touched in D365, y and w in Campaign. Whatever the rule, the opt-out stands. Then a one-way run leaves every
    pair with different synced values, both sides change (D365 opts in, Campaign out; x and z in D365 last):
    now the rule decides."""

    async def body(rig: Rig) -> None:
        ids = dict(zip("xzyw", await rig.contacts(4), strict=True))
        d365_value = {"x": True, "z": False, "y": False, "w": True}
        await rig.pair(list(ids.values()), profile_values={ids[k]: not v for k, v in d365_value.items()})
        await rig.advance(60)
        for k, cid in ids.items():
            await rig.edit_contact(cid, d365_value[k])  # every contact modified after its profile was created
        await rig.advance(60)
        for k in "yw":
            await rig.edit_profile(rig.pairs[ids[k]], not d365_value[k])  # ...and y, w touched again in Campaign
        result = await rig.sync(custom_rule("both", conflict)).run()
        assert result.conflicts == 4 and result.failed == 0 and writes(result) == 4
        for k, cid in ids.items():
            assert await rig.both(cid) == (FIRST_RUN[k],) * 2, (conflict, k)
        again = await rig.sync(custom_rule("both", conflict)).run()
        assert writes(again) == 0 and again.conflicts == 0

        for cid in ids.values():
            await rig.edit_profile(rig.pairs[cid], False)  # Campaign opts in; the one-way rule leaves it there
        assert writes(await rig.sync(custom_rule("d365-to-campaign", conflict)).run()) == 0
        await rig.advance(60)
        for k in "yw":
            await rig.edit_contact(ids[k], False)
        await rig.advance(60)
        for cid in ids.values():
            await rig.edit_profile(rig.pairs[cid], True)
        await rig.advance(60)
        for k in "xz":
            await rig.edit_contact(ids[k], False)
        result = await rig.sync(custom_rule("both", conflict)).run()
        assert result.conflicts == 4 and result.failed == 0 and writes(result) == 4
        for k, cid in ids.items():
            assert await rig.both(cid) == (BOTH_CHANGED[conflict][k],) * 2, (conflict, k)

    scenario(tmp_path, body)


@pytest.mark.parametrize("direction", ["d365-to-campaign", "campaign-to-d365"])
def test_one_way_directions_leave_the_other_side_alone(tmp_path: Path, direction: str) -> None:
    async def body(rig: Rig) -> None:
        a, b = await rig.contacts(2)
        pa, _pb = await rig.pair([a, b], profile_values={a: False, b: False})
        for cid in (a, b):
            await rig.edit_contact(cid, False)
        optout = custom_rule(direction, "optout-wins")
        assert writes(await rig.sync(optout).run()) == 0
        await rig.opt_out_in_campaign(pa)  # A changes in Campaign
        await rig.edit_contact(b, True)  # B changes in D365
        result = await rig.sync(optout).run()
        assert (result.campaign_changes_seen, result.d365_changes_seen) == (1, 1)
        if direction == "d365-to-campaign":
            assert (result.written_to_campaign, result.written_to_d365) == (1, 0)
            assert await rig.both(a) == (False, True)  # Campaign's opt-out stays in Campaign
            assert await rig.both(b) == (True, True)
        else:
            assert (result.written_to_campaign, result.written_to_d365) == (0, 1)
            assert await rig.both(a) == (True, True)
            assert await rig.both(b) == (True, False)  # D365's opt-out stays in D365
        for _ in range(2):  # the difference left behind is not seen again, and nothing is written
            again = await rig.sync(optout).run()
            assert writes(again) == 0 and again.campaign_changes_seen == 0 and again.d365_changes_seen == 0
        if direction == "d365-to-campaign":
            await rig.edit_contact(a, True)  # now D365 opts A out too: already opted out in Campaign, no write
            assert writes(await rig.sync(optout).run()) == 0
            await rig.edit_contact(a, False)  # and opting A in from D365 does reach Campaign
            assert (await rig.sync(optout).run()).written_to_campaign == 1
            assert await rig.both(a) == (False, False)

    scenario(tmp_path, body)


async def _two_synced_pairs(rig: Rig) -> tuple[str, str, str]:
    """Two contacts paired with their profiles, both opted in on both sides and synced; B's profile PKey."""
    a, b = await rig.contacts(2)
    _pa, pb = await rig.pair([a, b], profile_values={a: False, b: False})
    for cid in (a, b):
        await rig.edit_contact(cid, False)
    await rig.sync().run()
    return a, b, pb


async def _both_opt_out(rig: Rig, a: str, b: str) -> Any:
    """Both contacts opt out in Dynamics 365; the sync that carries it."""
    await rig.edit_contact(a, True)
    await rig.edit_contact(b, True)
    return await rig.sync().run()


def test_a_rejected_write_is_dead_lettered_and_retried_until_it_goes_through(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        a, b, pb = await _two_synced_pairs(rig)
        rig.gateway.pkeys.add(pb)
        result = await _both_opt_out(rig, a, b)
        assert (result.written_to_campaign, result.failed) == (1, 1)  # A went through; B did not stop the run
        assert await rig.both(a) == (True, True) and await rig.both(b) == (True, False)
        [letter] = rig.store.list_dead_letters(flow="optout:email")
        assert letter.source_key == b and letter.field == "blackListEmail" and letter.status == DeadLetterStatus.OPEN
        assert "400" in letter.reason and "locked by a workflow" in letter.reason
        assert letter.record["PKey"] == pb and letter.mapping_line == 4

        # The cursor moved past B's change, yet B is retried: its D365 value was kept as seen-but-not-synced.
        again = await rig.sync().run()
        assert (again.failed, writes(again)) == (1, 0)
        assert rig.store.list_dead_letters(flow="optout:email")[0].attempts == 2
        rig.gateway.pkeys.clear()
        fixed = await rig.sync().run()
        assert (fixed.written_to_campaign, fixed.failed) == (1, 0)
        assert await rig.both(b) == (True, True)
        assert rig.store.list_dead_letters(flow="optout:email")[0].status == DeadLetterStatus.RESOLVED
        assert writes(await rig.sync().run()) == 0

    scenario(tmp_path, body)


def test_a_write_refused_transiently_gets_the_flows_rounds_then_waits_as_retrying(tmp_path: Path) -> None:
    """Opt-out writes go through the flows' writer and acknowledge step: a write still refused transiently after
    the HTTP layer's retries gets more rounds in the run, then waits as a `retrying` dead letter, which the next
    run closes once the write goes through."""

    async def body(rig: Rig) -> None:
        a, b, pb = await _two_synced_pairs(rig)
        rig.gateway.busy.add(pb)
        result = await _both_opt_out(rig, a, b)
        assert (result.written_to_campaign, result.failed) == (1, 1)
        http_tries = rig.campaign.http.limits.max_retries + 1
        assert rig.gateway.busy_answers > http_tries  # more than one request's retries: the writer's rounds
        [letter] = rig.store.list_dead_letters(flow="optout:email")
        assert letter.source_key == b and letter.field == "blackListEmail" and kind(letter) == "retrying"
        assert letter.reason.startswith(TRANSIENT_PREFIX) and "too many requests" in letter.reason
        rig.gateway.busy.clear()
        fixed = await rig.sync().run()
        assert (fixed.written_to_campaign, fixed.failed) == (1, 0) and await rig.both(b) == (True, True)
        assert rig.store.list_dead_letters(flow="optout:email")[0].status == DeadLetterStatus.RESOLVED

    scenario(tmp_path, body)


def test_expired_delta_token_means_a_full_read_that_still_sees_the_change(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        a, b = await rig.contacts(2)
        await rig.pair([a, b], profile_values={a: False, b: False})
        for cid in (a, b):
            await rig.edit_contact(cid, False)
        assert (await rig.sync().run()).full_read
        await rig.advance(8 * 86400)  # past the 7-day change-tracking retention
        await rig.edit_contact(a, True)
        result = await rig.sync().run()
        assert result.full_read and any("expired" in note for note in result.notes)
        assert result.written_to_campaign == 1 and await rig.both(a) == (True, True)
        later = await rig.sync().run()
        assert not later.full_read and writes(later) == 0

    scenario(tmp_path, body)


def test_pairs_that_join_or_leave_the_key_map_between_runs(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        a, b, c = await rig.contacts(3)
        await rig.pair([a], profile_values={a: False})
        await rig.edit_contact(a, False)
        await rig.edit_contact(b, False)
        await rig.sync().run()
        # B joins the key map (the contacts flow created its profile) without changing in D365: its value is
        # fetched by key, and the first-run rule for that pair applies (optout-wins: the profile's opt-out).
        await rig.pair([b], profile_values={b: True})
        joined = await rig.sync().run()
        assert joined.pairs == 2 and joined.conflicts == 1 and joined.written_to_d365 == 1
        assert await rig.both(b) == (True, True)
        # A's contact is deleted: its pair ends quietly, its state is dropped.
        resp = await rig.control.delete(f"d365/contact/{a}")
        assert resp.status_code == 204
        await rig.opt_out_in_campaign(rig.pairs[a])
        gone = await rig.sync().run()
        assert writes(gone) == 0 and gone.failed == 0
        assert a not in rig.store.optout_pairs("email")
        # C is not paired: changing it is counted as unpaired and written nowhere.
        await rig.edit_contact(c, True)
        lone = await rig.sync().run()
        assert writes(lone) == 0 and lone.unpaired >= 1

    scenario(tmp_path, body)


def test_the_runner_builds_one_sync_per_rule(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        module = parse((FIXTURE_MAPPINGS / "optout.map").read_text(encoding="utf-8"), "mappings/optout.map").module
        [sync] = build_optout_syncs([module], Connectors(rig.d365, rig.campaign, None), rig.store)
        a, = await rig.contacts(1)
        await rig.pair([a])
        result = await sync.run()
        assert result.name == "email" and result.pairs == 1 and result.counts()["pairs"] == 1
        sync.forget()  # a replay: the next run is a first run again
        assert rig.store.get_cursor("optout:email:d365") is None
        assert rig.store.optout_pairs("email") == {}
        assert (await sync.run()).full_read

    scenario(tmp_path, body)
