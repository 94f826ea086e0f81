"""Adobe I/O Events journal contract (PROTOCOLS.md §5) and deliveries that fill it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mapsync.emulators.journal import Clock
from mapsync.emulators.server import AdobeServices, Credentials

C = Credentials()
SNAPSHOTS = Path(__file__).resolve().parents[2] / "schemas" / "snapshots" / "campaign"
LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')


@pytest.fixture()
def adobe() -> AdobeServices:
    return AdobeServices(seed=5, clock=Clock(datetime(2024, 5, 1, tzinfo=UTC)))


@pytest.fixture()
def client(adobe: AdobeServices) -> TestClient:
    return _login(TestClient(Starlette(routes=adobe.routes()), base_url="https://events.test"))


def _login(c: TestClient) -> TestClient:
    token = c.post("/ims/token/v3", data={"grant_type": "client_credentials", "client_id": C.campaign_client_id,
                                          "client_secret": C.campaign_client_secret}).json()["access_token"]
    c.headers.update({"Authorization": f"Bearer {token}", "x-api-key": C.campaign_client_id})
    return c


def _profiles(adobe: AdobeServices, n: int) -> list[str]:
    adobe.store.insert_many("profile", [{"email": f"p{i}@example.com", "externalId": f"c-{i}"} for i in range(n)])
    return list(adobe.campaign.all_profile_pkeys())


def _links(reply) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {rel: url for value in reply.headers.get_list("link") for url, rel in LINK.findall(value)}


def test_empty_journal_answers_204_with_retry_after_and_links(client: TestClient) -> None:
    reply = client.get(C.journal_path)
    assert reply.status_code == 204 and reply.headers["retry-after"] == "10"
    assert set(_links(reply)) == {"next", "validate"}


def test_pages_follow_link_next_and_positions_resume(client: TestClient, adobe: AdobeServices) -> None:
    result = adobe.campaign.send_delivery(_profiles(adobe, 40), "Spring newsletter", "Spring 2024")
    total = sum(result.counts.values())
    assert result.counts["send"] == 40 and total == len(adobe.journal)
    url, ids, positions = f"{C.journal_path}?limit=7", [], []
    while True:
        reply = client.get(url)
        if reply.status_code == 204:
            break
        assert reply.status_code == 200
        body = reply.json()
        assert body["_page"]["count"] == len(body["events"]) <= 7
        assert body["_page"]["last"] == body["events"][-1]["position"]
        ids += [e["event"]["id"] for e in body["events"]]
        positions += [e["position"] for e in body["events"]]
        url = _links(reply)["next"]
        assert url.startswith("/events/") and "limit=7" in url and f"since={body['_page']['last']}" in url
    assert len(ids) == total and len(set(ids)) == total  # event ids unique
    assert len(set(positions)) == total
    # The 204 at the end repeats the same position as next link.
    assert _links(reply)["next"] == url


def test_new_events_after_the_end_are_returned_from_the_same_link(client: TestClient, adobe: AdobeServices) -> None:
    pkeys = _profiles(adobe, 3)
    adobe.campaign.send_delivery(pkeys[:1], "d1", "c1")
    first = client.get(C.journal_path)
    after = _links(first)["next"]
    assert client.get(after).status_code == 204
    adobe.campaign.send_delivery(pkeys[1:], "d2", "c1")
    again = client.get(after)
    assert again.status_code == 200
    assert {e["event"]["delivery"]["deliveryName"] for e in again.json()["events"]} == {"d2"}


def test_latest_jumps_to_the_end(client: TestClient, adobe: AdobeServices) -> None:
    adobe.campaign.send_delivery(_profiles(adobe, 5), "d", "c")
    reply = client.get(f"{C.journal_path}?latest=true")
    assert reply.status_code == 204
    assert client.get(_links(reply)["next"]).status_code == 204


def test_positions_older_than_retention_are_gone(client: TestClient, adobe: AdobeServices) -> None:
    pkeys = _profiles(adobe, 2)
    adobe.campaign.send_delivery(pkeys[:1], "old", "c")
    old = client.get(C.journal_path).json()["events"][0]["position"]
    adobe.clock.advance(6 * 86400)
    adobe.campaign.send_delivery(pkeys[1:], "new", "c")
    _login(client)  # IMS tokens last a day
    assert client.get(f"{C.journal_path}?since={old}").status_code in (200, 204)
    adobe.clock.advance(1 * 86400 + 1)
    _login(client)
    gone = client.get(f"{C.journal_path}?since={old}")
    assert gone.status_code == 410 and gone.text == f"Events at position {old} have expired."
    oldest = client.get(C.journal_path).json()["events"]
    assert {e["event"]["delivery"]["deliveryName"] for e in oldest} == {"new"}


def test_journal_needs_the_gateway_headers_and_valid_positions(client: TestClient) -> None:
    assert client.get(C.journal_path, headers={"x-api-key": ""}).status_code == 403
    anonymous = TestClient(client.app, base_url="https://events.test")
    assert anonymous.get(C.journal_path).json()["error_code"] == "403010"
    assert client.get(f"{C.journal_path}?since=mapsync:000000000001:000000000000").status_code == 400
    assert client.get(f"{C.journal_path}?limit=0").status_code == 400


def test_event_payload_has_exactly_the_snapshot_fields(adobe: AdobeServices) -> None:
    adobe.campaign.send_delivery(_profiles(adobe, 200), "Launch", "Summer")
    seen: dict[str, dict] = {}
    for entry in adobe.journal.events(limit=10_000):
        seen.setdefault(entry["event"]["type"], entry["event"])
    assert set(seen) == {"send", "open", "click", "bounce"}
    for kind, event in seen.items():
        snapshot = json.loads((SNAPSHOTS / f"events.{kind}.json").read_text())
        assert set(event) == set(snapshot["fields"]), kind
        for name, spec in snapshot["fields"].items():
            if spec["type"] == "object":
                assert set(event[name]) == set(spec["fields"]), (kind, name)
    assert seen["send"]["profile"]["externalId"].startswith("c-")
    assert seen["bounce"]["bounce"]["type"] in ("hard", "soft")


def test_deliveries_are_deterministic_by_seed_and_skip_opted_out(adobe: AdobeServices) -> None:
    pkeys = _profiles(adobe, 100)
    adobe.campaign.opt_out(pkeys[0])
    one = adobe.campaign.send_delivery(pkeys, "d", "c")
    assert one.skipped == 1 and one.counts["send"] == 99
    other = AdobeServices(seed=5, clock=Clock(datetime(2024, 5, 1, tzinfo=UTC)))
    other_pkeys = _profiles(other, 100)
    other.campaign.opt_out(other_pkeys[0])
    two = other.campaign.send_delivery(other_pkeys, "d", "c")
    assert one.counts == two.counts
    assert adobe.journal.events(limit=500) == other.journal.events(limit=500)
    assert all(n > 0 for n in one.counts.values())


def test_opt_out_bumps_last_modified(adobe: AdobeServices) -> None:
    pkey = _profiles(adobe, 1)[0]
    before = adobe.store.get("profile", adobe.store.row_id("profile", pkey) or 0)
    adobe.clock.advance(5)
    after = adobe.campaign.opt_out(pkey)
    assert after is not None and before is not None
    assert after["blackListEmail"] is True and after["lastModified"] > before["lastModified"]
