"""A contact created through the Dataverse Web API without ``statecode`` is Active, as Dataverse makes it,
so the contacts flow (``where statecode == 0``) syncs it to Campaign."""

from __future__ import annotations

import httpx

from mapsync.emulators.campaign.store import Condition
from tests.e2e.conftest import Live, counts


def test_contact_created_without_statecode_is_active_and_synced(live: Live) -> None:
    live.run()
    emulator = live.emulator
    token, _ = emulator.dataverse.issuer.issue(emulator.credentials.d365_client_id, "https://org/.default")
    with httpx.Client(base_url=live.served.base_url, verify=live.served.client_ssl(), timeout=30) as c:
        reply = c.post("/api/data/v9.2/contacts", headers={"Authorization": f"Bearer {token}"},
                       json={"firstname": "Nadia", "lastname": "Keller", "emailaddress1": "nadia.keller@example.com"})
    assert reply.status_code == 204
    rid = reply.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    row = emulator.dataverse.store.get("contact", rid)
    assert row is not None
    assert (row["statecode"], row["statuscode"], row["donotbulkemail"], row["followemail"]) == (0, 1, False, True)
    report = live.run()
    assert counts(report, "contacts")["created"] == 1
    found = emulator.adobe.store.rows_where("profile", [Condition(("email",), "nadia.keller@example.com")])
    profiles = [fields for _row_id, fields in found]
    assert len(profiles) == 1
