"""Connector throughput against the in-process emulator with Dataverse service-protection limits on.

    python -m bench.connectors [--contacts 20000] [--writes 5000]

Prints rows/s read and written, and each as a fraction of the ceiling the request limit allows
(Dataverse: 6000 requests per 300 s per user; a read page carries up to 5000 rows, a $batch up to
``batch_size`` records). Real time, real limiter: no fault injection, so the number is the clean path.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx

from mapsync.dsl.schema import load_catalog
from mapsync.emulators.server import Emulator
from mapsync.engine.config import D365Settings, Secret, ServiceLimits
from mapsync.engine.connectors.base import WriteOp
from mapsync.engine.connectors.d365 import ODATA_HEADERS, D365Connector
from mapsync.engine.http import HttpClient

BASE = "https://dataverse.bench"
REQUESTS, WINDOW = 6000, 300.0


class _Tokens:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator, self.current = emulator, None

    async def token(self, *, stale: str | None = None) -> str:
        if self.current is None or stale == self.current:
            self.current, _ = self.emulator.dataverse.issuer.issue(self.emulator.credentials.d365_client_id, "b")
        return self.current


async def main(contacts: int, writes: int, batch_size: int, concurrency: int) -> None:
    emulator = Emulator(contacts=contacts, faults="none")
    limits = ServiceLimits(concurrency=concurrency, requests_per_window=REQUESTS, window_seconds=WINDOW,
                           batch_size=batch_size)
    settings = D365Settings(url=BASE, tenant_id="t", client_id="c", client_secret=Secret("unused"), limits=limits)
    http = HttpClient("d365", limits, _Tokens(emulator), transport=httpx.ASGITransport(app=emulator.app),
                      base_url=settings.api_base, headers={k: v for k, v in ODATA_HEADERS.items() if k != "Content-Type"})
    conn = D365Connector(settings, http, load_catalog())
    read_ceiling = REQUESTS / WINDOW * 5000
    write_ceiling = REQUESTS / WINDOW * batch_size

    start = time.perf_counter()
    n = 0
    async for page in conn.read("contact", ["contactid", "fullname", "emailaddress1"]):
        n += len(page)
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(f"read   {n:>7} rows in {elapsed:6.2f} s = {rate:>9.0f} rows/s; ceiling {read_ceiling:>8.0f} rows/s "
          f"-> {rate / read_ceiling:.2f} of the request limit's ceiling")

    ops = [WriteOp("upsert", "contact", {"lastname": f"B{i}"}, target_id=str(uuid.UUID(int=7 * 10**9 + i)), ref=i)
           for i in range(writes)]
    start = time.perf_counter()
    outcomes = await conn.write(ops)
    elapsed = time.perf_counter() - start
    ok = sum(o.ok for o in outcomes)
    rate = ok / elapsed
    print(f"write  {ok:>7} rows in {elapsed:6.2f} s = {rate:>9.0f} rows/s; ceiling {write_ceiling:>8.0f} rows/s "
          f"-> {rate / write_ceiling:.2f} of the request limit's ceiling (batch {batch_size}, "
          f"max in flight {http.limiter.max_in_flight}/{concurrency})")
    await http.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.contacts, args.writes, args.batch_size, args.concurrency))
