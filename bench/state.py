"""State store throughput: key-map writes and reads of 100,000 keys in pages, in keys per second.

    python -m bench.state [--keys N] [--page P] [--postgres URL]

SQLite always (a temporary file); PostgreSQL too when ``--postgres`` (or ``MAPSYNC_TEST_POSTGRES``) names a
database to use (the bench writes flow ``bench-contacts`` and removes it again). A 1,000,000-record run
spends well under a minute in the store at 20,000 keys/s; the services' limits allow far fewer writes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mapsync.engine.state.base import KeyEntry, StateStore, open_store

FLOW = "bench-contacts"


def measure(store: StateStore, n: int, page: int) -> tuple[float, float]:
    """(keys put per second, keys got per second) for ``n`` keys in pages of ``page``."""
    when = datetime(2026, 1, 1, tzinfo=UTC)
    entries = [KeyEntry(f"contact-{i:07d}", f"profile-{i}", f"{i:016x}", True, when) for i in range(n)]
    store.clear_flow(FLOW)
    started = time.perf_counter()
    for start in range(0, n, page):
        store.put_keys(FLOW, entries[start : start + page])
    put_done = time.perf_counter()
    found = 0
    for start in range(0, n, page):
        found += len(store.get_keys(FLOW, [e.source_key for e in entries[start : start + page]]))
    get_done = time.perf_counter()
    store.clear_flow(FLOW)
    if found != n:
        raise RuntimeError(f"read back {found} of {n} keys")
    return n / (put_done - started), n / (get_done - put_done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=2_000)
    parser.add_argument("--postgres", default=os.environ.get("MAPSYNC_TEST_POSTGRES"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        urls = [f"sqlite:///{Path(folder) / 'bench.sqlite'}"] + ([args.postgres] if args.postgres else [])
        for url in urls:
            with open_store(url) as store:
                put_rate, get_rate = measure(store, args.keys, args.page)
            print(f"{type(store).__name__}: put {put_rate:,.0f} keys/s, get {get_rate:,.0f} keys/s "
                  f"({args.keys:,} keys in pages of {args.page:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
