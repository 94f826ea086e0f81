"""`mapsync plan --env E [--flow F]`: what a run would create, update and delete, and what it would cost.

Reads both systems, writes nothing: no key map, no cursor, no lease. Updates are shown as field-level
diffs against the target record as it is now.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path
from typing import Any

from rich.markup import escape

from mapsync.engine.commands._common import add_command
from mapsync.engine.connectors import build_connectors
from mapsync.engine.executor import FlowResult, PlannedWrite
from mapsync.engine.progress import configure_logging, console, optout_line, print_notes, summary_table
from mapsync.engine.runner import Job, load_job, run_job

SAMPLE = 3
READ_PAGE = 5000


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "plan", "show what a run would create, update and delete (writes nothing)", run,
                    env=True)
    p.add_argument("--flow", action="append", metavar="F", help="plan only this flow (repeatable)")
    p.add_argument("--full", action="store_true", help="plan a full run instead of an incremental one")
    p.add_argument("--sample", type=int, default=SAMPLE, metavar="N", help=f"records shown per flow (default {SAMPLE})")


def run(args: argparse.Namespace) -> int:
    configure_logging(False)
    job = load_job(Path(args.config), args.env)
    return asyncio.run(_plan(job, args))


async def _plan(job: Job, args: argparse.Namespace) -> int:
    from mapsync.engine.commands.run import until_signalled

    report = await until_signalled(run_job(job, only=args.flow, full=args.full, dry_run=True))
    if isinstance(report, int):
        return report
    console.print(summary_table(report.flows, title=f"mapsync plan — environment {job.env.name}", planned=True))
    print_notes(report.flows)
    connectors = build_connectors(job.env, catalog=job.catalog)
    try:
        for result in report.flows if not report.outages else ():  # nothing to look up in a service that is down
            await _describe(job, result, connectors, args.sample)
    finally:
        await connectors.aclose()
    for o in report.optouts:
        console.print(optout_line(o))
    for error in report.errors:
        console.print(f"[red]error[/red] {error}", highlight=False)
    for line in report.outage_lines():
        console.print(f"[red]unreachable[/red] {escape(line)}", highlight=False)
    return 0 if report.ok else 1  # a flow that could not be planned is a finding, as in `run`


async def _describe(job: Job, result: FlowResult, connectors: Any, sample: int) -> None:
    flow = job.flows[result.flow]
    console.print(f"\n[bold]{flow.name}[/bold]  {flow.source.system}.{flow.source.name} -> "
                  f"{flow.target.system}.{flow.target.name}  ({flow.file})")
    if flow.pushdown:
        console.print(f"  $filter (sent to Dynamics 365 on full reads): {flow.pushdown}", markup=False)
    if flow.residual_text:
        console.print(f"  evaluated locally: {flow.residual_text}", markup=False)
    console.print(f"  API calls: about {_calls(job, result)}")
    if result.route is not None:
        console.print(f"  path: {_route_line(job, result)}", markup=False)
    elif flow.target.system == "d365" and connectors.d365 is not None:
        console.print(f"  path: {await _d365_path_line(job, result, connectors.d365)}", markup=False)
    shown = result.planned[:sample]
    if shown:
        console.print(f"  {sample_line(shown, result)}", markup=False)
    for planned in shown:
        await _show(flow, planned, connectors)


def sample_line(shown: list[PlannedWrite], result: FlowResult) -> str:
    """``3 of 909 creates shown, 0 of 12 updates shown``: what follows is a sample, and of how much."""
    totals = {"create": result.counts.created, "update": result.counts.updated, "delete": result.counts.deleted}
    parts = []
    for op, total in totals.items():
        n = sum(1 for p in shown if p.op == op)
        if total:
            parts.append(f"{n:,} of {total:,} {op}{'' if total == 1 else 's'}")
    return ", ".join(parts) + " shown" + ("" if len(shown) == sum(totals.values()) else " (`--sample N` for more)")


def _calls(job: Job, result: FlowResult) -> str:
    c = result.counts
    reads = max(1, math.ceil(c.read / READ_PAGE))
    writes = c.created + c.updated + c.deleted
    if job.flows[result.flow].target.system == "d365" and job.env.d365 is not None:
        return f"{reads} read(s) + {_batch_requests(job, result.flow, writes)} $batch request(s) for {writes} write(s)"
    return f"{reads} read(s) + {writes} write(s)"


def _batch_requests(job: Job, flow: str, writes: int) -> int:
    """The ``$batch`` requests ``writes`` writes of ``flow`` into Dynamics 365 take (its batch size)."""
    return math.ceil(writes / max(1, job.flows[flow].batch or job.env.d365.limits.batch_size))


def _route_line(job: Job, result: FlowResult) -> str:
    """``bulk (full read, 50,000 writes > bulk.min_records 20,000); REST 50,010 call(s) ...; bulk about ...``."""
    from mapsync.engine.bulk.choice import cost_line

    c, bulk = result.counts, job.env.bulk
    writes = c.created + c.updated
    costs = cost_line(writes, max(1, math.ceil(c.read / READ_PAGE)), chunk_records=bulk.chunk_records,
                      poll_seconds=bulk.poll_seconds)
    return f"{result.route.path} ({result.route.why}); {costs}"


async def _d365_path_line(job: Job, result: FlowResult, d365: Any) -> str:
    """``bulk messages (CreateMultiple ...); about 3 request(s), $batch 21`` or why the writes go by ``$batch``."""
    from mapsync.engine.connectors.d365_bulk import BULK_MIN_WRITES, BULK_SIZE

    flow, c = job.flows[result.flow], result.counts
    writes = c.created + c.updated
    batch_calls = _batch_requests(job, result.flow, writes)
    message = "CreateMultiple" if flow.mode == "create" or c.updated == 0 else "UpsertMultiple"
    if not await d365.messages.available(flow.target.name, message):
        return f"$batch ({flow.target.name} does not list {message} in sdkmessagefilters); {batch_calls:,} request(s)"
    if writes < BULK_MIN_WRITES:
        return (f"$batch ({writes:,} write(s) < {BULK_MIN_WRITES} per write step, the least that goes through "
                f"{message}); {batch_calls:,} request(s)")
    return (f"bulk messages ({message}: {flow.target.name} lists it in sdkmessagefilters; {BULK_SIZE:,} rows a "
            f"request); about {math.ceil(writes / BULK_SIZE):,} request(s), against {batch_calls:,} through $batch")


async def _show(flow: Any, planned: PlannedWrite, connectors: Any) -> None:
    console.print(f"  {planned.op} {planned.key}" + (f" (target {planned.target_id})" if planned.target_id else ""),
                  markup=False)
    current: dict[str, Any] = {}
    if planned.op == "update" and flow.target.system == "campaign" and connectors.campaign is not None:
        rows = await connectors.campaign.find(flow.target.name, flow.key_target, planned.key)
        current = rows[0] if rows else {}
    for path, value in _flatten(planned.payload):
        if planned.op == "update":
            old = _lookup(current, path)
            if old == value:
                continue
            console.print(f"      {path}: {old!r} -> {value!r}", markup=False)
        else:
            console.print(f"      {path} = {value!r}", markup=False)


def _flatten(payload: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in payload.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and "PKey" not in value:
            out.extend(_flatten(value, path + "."))
        else:
            out.append((path, value))
    return out


def _lookup(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
