"""Which path a flow's writes take, and why (what `mapsync plan` prints)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mapsync.engine.bulk.choice import choose, cost_line, unavailable
from mapsync.engine.config import BulkSettings, BulkWorkflow


def flow(system: str = "campaign", name: str = "profile", mode: str = "upsert") -> SimpleNamespace:
    return SimpleNamespace(target=SimpleNamespace(system=system, name=name), mode=mode)


def env(*, sftp: bool = True, workflows: tuple[str, ...] = ("profile",)) -> SimpleNamespace:
    campaign = SimpleNamespace(sftp=object() if sftp else None)
    return SimpleNamespace(campaign=campaign, bulk=BulkSettings(workflows={w: BulkWorkflow("W") for w in workflows}))


@pytest.mark.parametrize(("f", "e", "links", "why"), [
    (flow(), env(), (), None),
    (flow(system="d365"), env(), (), "writes to Dynamics 365"),
    (flow(), env(), ("contacts",), "linked flow (links to contacts)"),
    (flow(mode="update"), env(), (), "mode update (only records the target already has are written)"),
    (flow(), env(sftp=False), (), "no campaign.sftp settings"),
    (flow(name="cusVehicle"), env(), (), "no import workflow for cusVehicle in bulk.workflows"),
])
def test_what_keeps_a_flow_off_the_bulk_path(f, e, links, why) -> None:
    assert unavailable(f, e, links) == why


def test_full_reads_above_the_threshold_go_bulk_and_the_flags_force_either_way() -> None:
    assert choose(None, full=True, writes=20_001, min_records=20_000, forced=None).bulk
    below = choose(None, full=True, writes=20_000, min_records=20_000, forced=None)
    assert not below.bulk and below.why == "full read, 20,000 writes <= bulk.min_records 20,000"
    assert choose(None, full=True, writes=5, min_records=20_000, forced=True).bulk
    assert choose(None, full=True, writes=10**6, min_records=0, forced=False).why == "--no-bulk"
    assert choose(None, full=False, writes=10**6, min_records=0, forced=True).why == "incremental read"
    linked = choose("linked flow (links to contacts)", full=True, writes=10**6, min_records=0, forced=True)
    assert not linked.bulk and linked.path == "REST"


def test_the_cost_line_counts_one_call_per_record_for_rest_and_pages_for_bulk() -> None:
    line = cost_line(1_000_000, 200, chunk_records=100_000, poll_seconds=5)
    assert line.startswith("REST 1,000,200 call(s) (200 read(s) + 1,000,000 write(s)); bulk about ")
    assert "~1,000 reconciliation read(s)" in line and "10 file(s) over SFTP" in line
