"""$batch: change sets are atomic, continue-on-error keeps going, the reply is one raw response per part."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from mapsync.emulators.dataverse.store import DataverseStore

pytestmark = pytest.mark.anyio


def _batch(parts: list[str], boundary: str = "batch_B") -> tuple[bytes, dict[str, str]]:
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"
    return body.encode(), {"Content-Type": f"multipart/mixed; boundary={boundary}"}


def _req(method: str, url: str, payload: dict | None = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    body = json.dumps(payload) if payload is not None else ""
    return f"{head}\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{body}"


def _changeset(reqs: list[str], boundary: str = "changeset_C") -> str:
    inner = "".join(f"--{boundary}\r\n{r}\r\n" for r in reqs) + f"--{boundary}--"
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}"


def _statuses(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.split("\r\n") if line.startswith("HTTP/1.1 ")]


async def test_changeset_is_atomic_and_echoes_content_id(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    ok = _changeset([_req("POST", "/api/data/v9.2/contacts", {"lastname": "A"}, "1"),
                     _req("POST", "/api/data/v9.2/contacts", {"lastname": "B"}, "2")])
    body, headers = _batch([ok])
    r = await dv.post("$batch", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert _statuses(r.text) == [204, 204] and "Content-ID: 1" in r.text and "Content-ID: 2" in r.text
    assert "changesetresponse_" in r.text and store.count("contact") == 2
    bad = _changeset([_req("POST", "contacts", {"lastname": "C"}, "1"),
                      _req("POST", "contacts", {"lastname": "x" * 60}, "2")])
    body, headers = _batch([bad])
    r = await dv.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and _statuses(r.text) == [400] and "0x80044331" in r.text
    assert store.count("contact") == 2  # the first create of the failed change set was rolled back
    assert [row["lastname"] for row in store.rows("contact")] == ["A", "B"]


async def test_stop_at_first_failure_or_continue_on_error(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    missing = uuid.uuid4()
    parts = [_req("POST", "contacts", {"lastname": "x" * 60}), _req("DELETE", f"contacts({missing})"),
             _req("POST", "contacts", {"lastname": "Ok"})]
    body, headers = _batch(parts)
    r = await dv.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and _statuses(r.text) == [400] and store.count("contact") == 0
    r = await dv.post("$batch", content=body, headers={**headers, "Prefer": "odata.continue-on-error"})
    assert r.status_code == 200 and _statuses(r.text) == [400, 404, 204] and store.count("contact") == 1


async def test_content_id_reference_and_get_part(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    cs = _changeset([_req("POST", "contacts", {"lastname": "Parent"}, "1"),
                     _req("PATCH", "$1", {"firstname": "Via-ref"}, "2")])
    body, headers = _batch([cs, _req("GET", "contacts?$select=fullname")])
    r = await dv.post("$batch", content=body, headers=headers)
    assert r.status_code == 200 and _statuses(r.text) == [204, 204, 200]
    assert '"fullname":"Via-ref Parent"' in r.text


async def test_more_than_1000_parts_is_rejected(dv: httpx.AsyncClient) -> None:
    body, headers = _batch([_req("GET", "contacts")] * 1001)
    r = await dv.post("$batch", content=body, headers=headers)
    assert r.status_code == 400 and "limit of 1000" in r.json()["error"]["message"]
