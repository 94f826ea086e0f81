"""An unmodified third-party Dataverse Web API client from PyPI against the emulator over TLS.

The client is ``dynamics-client`` (0.8.4): authlib's OAuth2 client credentials flow (``client_secret_basic``)
against an arbitrary token URL, then httpx calls to an arbitrary Web API root. Nothing of ours is in its
path: if the emulator's token endpoint, paging or create replies differ from the real service in a way the
client relies on, these tests fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("dynamics", reason="dynamics-client is a dev extra")

from dynamics import DynamicsClient
from dynamics.exceptions import DynamicsException

from mapsync.emulators.server import Emulator, Served, start_in_thread

CONTACTS = 120
PAGE = 50


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Emulator, Served]]:
    emulator = Emulator(seed=7, contacts=CONTACTS)
    running = start_in_thread(emulator)
    try:
        yield emulator, running
    finally:
        running.stop()


@pytest.fixture
def client(served: tuple[Emulator, Served], monkeypatch: pytest.MonkeyPatch) -> DynamicsClient:
    emulator, running = served
    # httpx (under authlib) trusts SSL_CERT_FILE when it is set; this machine points it (and the requests
    # variables) at the system bundle, so the test CA replaces them for the duration of the test.
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(running.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    c = emulator.credentials
    return DynamicsClient(
        api_url=f"{running.base_url}/api/data/v9.2",
        token_url=f"{running.base_url}/{c.tenant_id}/oauth2/v2.0/token",
        client_id=c.d365_client_id,
        client_secret=c.d365_client_secret,
        scope=[f"{running.base_url}/.default"],
        cache_token=False,  # its default cache is a process-wide SQLite file: keep tests independent
        connection_timeout=20,
    )


def test_client_gets_a_token_from_the_emulated_entra_id(client: DynamicsClient) -> None:
    client._ensure_token()  # the client's own token step (authlib fetch_token with HTTP Basic credentials)
    token = client._oauth_client.token
    assert token["token_type"].lower() == "bearer" and token["access_token"]
    assert int(token["expires_in"]) > 60 and not token.is_expired(leeway=5)


def test_client_reads_several_pages_of_contacts(served: tuple[Emulator, Served], client: DynamicsClient) -> None:
    emulator, _running = served
    client.table = "contacts"
    client.select = ["contactid", "fullname", "emailaddress1", "modifiedon"]
    client.pagesize = PAGE
    first = client.get()
    assert len(first.data) == PAGE and first.next_link is not None
    # The client follows @odata.nextLink itself while a page is full: 120 rows are 3 pages.
    client.pagesize = PAGE
    everything = client.get(pagination_rules={"pages": -1})
    ids = [row["contactid"] for row in everything.data]
    assert len(ids) == len(set(ids)) == emulator.dataverse.store.count("contact") == CONTACTS
    assert everything.next_link is None
    assert client.request_counter >= 1 + 3
    assert set(everything.data[0]) >= {"@odata.etag", "contactid", "fullname", "emailaddress1", "modifiedon"}


def test_client_filters_and_orders_across_pages(served: tuple[Emulator, Served], client: DynamicsClient) -> None:
    emulator, _running = served
    active = sorted(r["contactid"] for r in emulator.dataverse.store.rows("contact") if r["statecode"] == 0)
    client.table = "contacts"
    client.select = ["contactid", "modifiedon", "lastname"]
    client.filter = ["statecode eq 0"]
    client.orderby = {"lastname": "asc"}
    client.pagesize = 40
    got = client.get(pagination_rules={"pages": -1})
    names = [(r["lastname"] or "").casefold() for r in got.data]
    assert names == sorted(names)
    assert sorted(r["contactid"] for r in got.data) == active and len(active) > 40


def test_client_creates_a_contact_and_reads_it_back(served: tuple[Emulator, Served], client: DynamicsClient) -> None:
    emulator, _running = served
    client.table = "contacts"
    # The client always asks for return=representation on POST: the body carries the new row.
    created = client.post({"firstname": "Zoë", "lastname": "Ngũgĩ", "emailaddress1": "zoe@example.org"})
    new_id = created.data["contactid"]
    assert created.data["fullname"] == "Zoë Ngũgĩ"

    client.reset_query()
    client.table = "contacts"
    client.row_id = new_id
    client.select = ["fullname", "emailaddress1"]
    back = client.get()
    assert back.data[0]["contactid"] == new_id and back.data[0]["emailaddress1"] == "zoe@example.org"
    assert emulator.dataverse.store.get("contact", new_id)["fullname"] == "Zoë Ngũgĩ"

    client.reset_query()
    client.table = "contacts"
    client.row_id = new_id
    patched = client.patch({"jobtitle": "Buyer"})  # If-Match: * and return=representation
    assert patched.data["jobtitle"] == "Buyer"
    assert emulator.dataverse.store.get("contact", new_id)["jobtitle"] == "Buyer"


def test_client_sees_the_real_error_for_a_bad_column(client: DynamicsClient) -> None:
    client.table = "contacts"
    client.select = ["no_such_column"]
    with pytest.raises(DynamicsException) as err:
        client.get()
    assert "no_such_column" in str(err.value)
