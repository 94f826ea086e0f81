"""Benchmark of the emulators at scale: 1,000,000 seeded contacts (and as many Campaign profiles, as the
sync benchmark writes), served over TLS on loopback. Prints numbers and their ratio to the targets:

    peak RSS            target < 2 GB
    paging over HTTP    target >= 5,000 rows/s (Dataverse contacts and Campaign profiles)

Run: ``.venv/bin/python -m bench.emulator [--contacts N] [--pages N]``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from mapsync.emulators.server import Emulator, start_in_thread

RSS_TARGET_MB = 2048
ROWS_PER_S_TARGET = 5000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def page_contacts(client: httpx.Client, emulator: Emulator, base: str, pages: int) -> tuple[int, float]:
    c = emulator.credentials
    token = client.post(f"{base}/{c.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": c.d365_client_id, "client_secret": c.d365_client_secret,
        "scope": f"{base}/.default"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "OData-MaxVersion": "4.0",
               "OData-Version": "4.0", "Prefer": "odata.maxpagesize=5000"}
    url = f"{base}/api/data/v9.2/contacts?$select=fullname,emailaddress1,modifiedon,statecode"
    return _page_through(client, url, headers, pages, lambda body: (len(body["value"]), body.get("@odata.nextLink")))


def page_profiles(client: httpx.Client, emulator: Emulator, base: str, pages: int) -> tuple[int, float]:
    c = emulator.credentials
    token = client.post(f"{base}/ims/token/v3", data={
        "grant_type": "client_credentials", "client_id": c.campaign_client_id,
        "client_secret": c.campaign_client_secret}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "X-Api-Key": c.campaign_client_id}
    url = f"{base}/{c.organization}/campaign/profileAndServices/profile?_lineCount=1000&_forcePagination=true"
    return _page_through(client, url, headers, pages,
                         lambda body: (len(body["content"]), body.get("next", {}).get("href")))


def _page_through(client: httpx.Client, url: str | None, headers: dict[str, str], pages: int,
                  rows_and_next: Callable[[Any], tuple[int, str | None]]) -> tuple[int, float]:
    """Follow up to ``pages`` next links; the rows read and the seconds it took."""
    rows, started = 0, time.perf_counter()
    for _ in range(pages):
        if not url:
            break
        reply = client.get(url, headers=headers)
        reply.raise_for_status()
        count, url = rows_and_next(reply.json())
        rows += count
    return rows, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=40, help="pages read from each service")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    emulator = Emulator(seed=1, contacts=args.contacts)
    seeded = time.perf_counter() - started
    print(f"seeded {args.contacts:,} contacts (+ accounts, vehicles, profiles) in {seeded:.1f} s "
          f"({args.contacts / seeded:,.0f} contacts/s); RSS {peak_rss_mb():,.0f} MB")

    started = time.perf_counter()
    batch = 50_000
    for start in range(0, args.contacts, batch):
        emulator.adobe.store.insert_many("profile", [
            {"email": f"user{i}@example.com", "firstName": "Zoë", "lastName": f"Müller {i}", "externalId": f"c-{i}",
             "location": {"city": "Köln", "countryCode": "DE"}} for i in range(start, min(start + batch, args.contacts))])
    print(f"wrote {args.contacts:,} Campaign profiles in {time.perf_counter() - started:.1f} s; RSS {peak_rss_mb():,.0f} MB")

    running = start_in_thread(emulator)
    try:
        with httpx.Client(verify=running.client_ssl(), timeout=120) as client:
            for name, fn in (("dataverse contacts", page_contacts), ("campaign profiles", page_profiles)):
                rows, elapsed = fn(client, emulator, running.base_url, args.pages)
                rate = rows / elapsed if elapsed else 0.0
                print(f"paging {name}: {rows:,} rows in {elapsed:.2f} s = {rate:,.0f} rows/s "
                      f"({rate / ROWS_PER_S_TARGET:.2f}x the {ROWS_PER_S_TARGET:,} rows/s target)")
    finally:
        running.stop()
    rss = peak_rss_mb()
    print(f"peak RSS {rss:,.0f} MB ({rss / RSS_TARGET_MB:.2f} of the {RSS_TARGET_MB:,} MB budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
