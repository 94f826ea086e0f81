"""Benchmark of the Dataverse emulator at scale: ``Emulator(contacts=N)`` (default 1,000,000) served by
uvicorn over TLS on loopback, every contact paged over HTTP with ``Prefer: odata.maxpagesize=5000``.

Prints the build time, the peak RSS (``resource.getrusage``), and rows/s for

    unordered paging        all contacts, insertion order (the connector's full read)
    modifiedon paging       ``$filter=modifiedon ge X&$orderby=modifiedon asc`` (the connector's read of
                            tables without change tracking); the first page sorts, the others bisect

with their ratio to the targets (peak RSS < 2 GB, paging >= 5,000 rows/s). Nothing is asserted.

Run: ``.venv/bin/python -m bench.emulator_dataverse [--contacts N] [--no-ordered]``.
"""

from __future__ import annotations

import argparse
import resource
import ssl
import time
from urllib.parse import quote

import httpx

from mapsync.emulators.server import Emulator, Served, start_in_thread

RSS_TARGET_MB = 2048
ROWS_PER_S_TARGET = 5000
PAGE_SIZE = 5000
SELECT = "fullname,emailaddress1,modifiedon,statecode"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def token(client: httpx.Client, emulator: Emulator, base: str) -> str:
    c = emulator.credentials
    reply = client.post(f"{base}/{c.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": c.d365_client_id, "client_secret": c.d365_client_secret,
        "scope": f"{base}/.default"})
    reply.raise_for_status()
    return str(reply.json()["access_token"])


def page_all(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[int, int, float, float]:
    """Follow ``@odata.nextLink`` to the end: (rows, distinct ids, seconds, seconds of the first page)."""
    rows, seen, first, started = 0, set(), 0.0, time.perf_counter()
    next_url: str | None = url
    while next_url:
        reply = client.get(next_url, headers=headers)
        reply.raise_for_status()
        body = reply.json()
        if not first:
            first = time.perf_counter() - started
        rows += len(body["value"])
        seen.update(r["contactid"] for r in body["value"])
        next_url = body.get("@odata.nextLink")
    return rows, len(seen), time.perf_counter() - started, first


def report(label: str, rows: int, distinct: int, seconds: float, first: float) -> None:
    rate = rows / seconds if seconds else 0.0
    print(f"{label:<18} {rows:>10,} rows ({distinct:,} distinct) in {seconds:6.1f} s = {rate:>9,.0f} rows/s "
          f"({rate / ROWS_PER_S_TARGET:.1f}x the {ROWS_PER_S_TARGET:,} rows/s target); first page {first:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--no-ordered", action="store_true", help="skip the modifiedon-ordered paging")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    emulator = Emulator(seed=1, contacts=args.contacts)
    built = time.perf_counter() - started
    rss = peak_rss_mb()
    print(f"built Emulator(contacts={args.contacts:,}) in {built:.1f} s ({args.contacts / built:,.0f} contacts/s)")
    print(f"peak RSS after build  {rss:,.0f} MB ({rss / RSS_TARGET_MB:.2f} of the {RSS_TARGET_MB:,} MB target)")

    served: Served = start_in_thread(emulator)
    try:
        verify = ssl.create_default_context(cafile=str(served.ca_file))
        with httpx.Client(verify=verify, timeout=120) as client:
            base = served.base_url
            headers = {"Authorization": f"Bearer {token(client, emulator, base)}", "Accept": "application/json",
                       "OData-MaxVersion": "4.0", "OData-Version": "4.0",
                       "Prefer": f"odata.maxpagesize={PAGE_SIZE}"}
            api = f"{base}/api/data/v9.2/contacts"
            report("unordered paging", *page_all(client, f"{api}?$select={SELECT}", headers))
            if not args.no_ordered:
                query = (f"$select={SELECT}&$filter={quote('modifiedon ge 2000-01-01T00:00:00Z')}"
                         f"&$orderby={quote('modifiedon asc')}")
                report("modifiedon paging", *page_all(client, f"{api}?{query}", headers))
    finally:
        served.stop()
    rss = peak_rss_mb()
    print(f"peak RSS after paging {rss:,.0f} MB ({rss / RSS_TARGET_MB:.2f} of the {RSS_TARGET_MB:,} MB target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
