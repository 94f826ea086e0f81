"""One run of an environment: load and compile the mappings, open the state store and the connectors,
run the flows in dependency order (a flow runs after the flows it links to), then the opt-out rules.

Everything that writes runs under a lease (one runner per flow, or opt-out rule, and environment). A flow
another runner holds is skipped, and so is every flow that links to it and every opt-out rule paired
through it: they would work from a key map that other runner is still changing.

This is what `mapsync run`, `mapsync plan` and the demo call; it holds no sync logic of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapsync.dsl.compiler import CompiledFlow, compile_project
from mapsync.dsl.errors import CheckError
from mapsync.dsl.plan import CompiledProject
from mapsync.dsl.project import Project, load_project
from mapsync.dsl.schema import Catalog, load_catalog
from mapsync.engine import leases
from mapsync.engine.auth import TokenCache
from mapsync.engine.bulk.route import route_for
from mapsync.engine.config import Config, Environment, load_config
from mapsync.engine.connectors import Connectors, build_connectors
from mapsync.engine.errors import ConfigError, LeaseHeld, ServiceDown, SyncError
from mapsync.engine.executor import FlowCounts, FlowResult, FlowRunner
from mapsync.engine.identity import bind, observe
from mapsync.engine.link_reasons import LinkReasons
from mapsync.engine.sources import source_for
from mapsync.engine.state.base import StateStore, open_store
from mapsync.engine.targets import target_for

__all__ = ["Job", "RunReport", "load_job", "order_flows", "run_job"]

log = logging.getLogger("mapsync.runner")


@dataclass
class RunReport:
    flows: list[FlowResult] = field(default_factory=list)
    optouts: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outages: dict[str, ServiceDown] = field(default_factory=dict)  # service -> why it stopped the run
    waiting: int = 0  # creates sent but unconfirmed when the run stopped: the next run looks them up first

    @property
    def ok(self) -> bool:
        return not self.errors and not self.outages and all(r.outcome == "ok" for r in self.flows)

    def outage_lines(self) -> list[str]:
        """One line per unreachable service: where, what failed, since when, and what was kept."""
        stopped = sum(r.outcome == "failed" for r in self.flows)
        not_started = sum(r.outcome == "skipped" for r in self.flows)
        kept = (f"kept: {stopped} flow(s) stopped at their last acknowledged page"
                + (f", {not_started} not started" if not_started else "")
                + (f", {self.waiting:,} create(s) to confirm" if self.waiting else "") + "; nothing lost")
        return [f"{down} — {kept}" for down in self.outages.values()]

    @property
    def dead_letters(self) -> int:
        return sum(r.counts.rejected + r.counts.failed for r in self.flows)


@dataclass
class Job:
    """Everything a run needs, loaded and checked before anything talks to a service."""

    config: Config
    env: Environment
    project: Project
    catalog: Catalog
    flows: CompiledProject

    def link_tables(self) -> dict[str, str]:
        return {name: f.target.name for name, f in self.flows.items()}


def load_job(config_path: Path, env_name: str, *, catalog: Catalog | None = None) -> Job:
    config = load_config(config_path, only=env_name)
    env = config.environment(env_name)
    if not config.mappings.exists():
        raise ConfigError(f"mappings folder {config.mappings} does not exist", setting="mappings")
    project, diagnostics = load_project([config.mappings], root=config.mappings)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        raise CheckError(f"{len(errors)} error(s) in the mappings: run `mapsync validate` to see them", errors)
    catalog = catalog or load_catalog(config.snapshots)
    flows = compile_project(project, catalog)
    return Job(config, env, project, catalog, flows)


def order_flows(flows: CompiledProject) -> list[str]:
    """Flows another flow links to come first, so links resolve in the same run (the compiled run order)."""
    return list(flows.order)


def stages(names: Sequence[str], links: dict[str, frozenset[str]], flows: dict[str, CompiledFlow]) -> list[list[str]]:
    """``names`` (in run order) grouped so that a flow runs after the flows it links to, and flows back into
    Dynamics 365 after the flows out of it (their events point at what those flows made)."""
    depth: dict[str, int] = {}
    has_d365_sources = any(flows[n].source.system == "d365" for n in names)
    for name in names:  # run order already puts every flow after the flows it links to
        after = [depth[d] + 1 for d in links.get(name, ()) if d in depth]
        if flows[name].source.system != "d365" and has_d365_sources:
            after.append(1)
        depth[name] = max(after, default=0)
    grouped: dict[int, list[str]] = {}
    for name in names:
        grouped.setdefault(depth[name], []).append(name)
    return [grouped[d] for d in sorted(grouped)]


def runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def run_job(job: Job, *, only: Sequence[str] | None = None, full: bool = False,
                  replay: Sequence[str] = (), dry_run: bool = False,
                  on_progress: Callable[[str, FlowCounts], None] | None = None,
                  on_finished: Callable[[str], None] | None = None,
                  transport: Any = None, msal_http_client: Any = None,
                  store: StateStore | None = None, optouts: bool = True, tokens: TokenCache | None = None,
                  rebind: bool = False, bulk: bool | None = None) -> RunReport:
    """Run (or plan) the job's flows once, then its opt-out rules. Runs that share ``tokens`` (``--watch``)
    reuse the access tokens of the ones before. The services must be the ones the state belongs to
    (``mapsync.engine.identity``); ``rebind`` accepts a deliberate move. ``bulk``: True/False forces Campaign
    full reads onto/off the bulk path (``mapsync.engine.bulk``); None leaves it to ``bulk.min_records``."""
    names = _flows_to_run(job, only, replay, rebind=rebind)
    own_store = store is None
    store = store or open_store(job.env.state_url, password=job.env.state_password)
    connectors = build_connectors(job.env, catalog=job.catalog, transport=transport, msal_http_client=msal_http_client,
                                  tokens=tokens)
    run = _Run(job, store, connectors, names, list(replay), full=full, dry_run=dry_run, on_progress=on_progress,
               on_finished=on_finished, bulk=bulk)
    try:
        await run.bind(rebind=rebind)
        await run.flows()
        if optouts and not only and not run.report.outages:
            await run.optouts()
        if run.report.outages and not dry_run:
            await run.count_waiting()
    finally:
        await connectors.aclose()
        if own_store:
            store.close()
    return run.report


def _flows_to_run(job: Job, only: Sequence[str] | None, replay: Sequence[str], *, rebind: bool) -> list[str]:
    """The flows a run asked for, in run order; a ConfigError for a flow the mappings do not define."""
    unknown = [f for f in [*(only or ()), *replay] if f not in job.flows]
    if unknown:
        raise ConfigError(f"unknown flow(s): {', '.join(unknown)}; the mappings define: {', '.join(sorted(job.flows))}",
                          setting="--flow")
    if rebind and only:
        raise ConfigError("--rebind re-syncs every flow that reads or writes a moved service: run it without --flow",
                          setting="--rebind")
    return [n for n in order_flows(job.flows) if not only or n in only or n in replay]


class _Run:
    """One pass of ``run_job``: its steps (bind the state to the services, the flows stage by stage, the opt-out
    rules) and what they share (the report, the flows left to another runner)."""

    def __init__(self, job: Job, store: StateStore, connectors: Connectors, names: list[str], replay: list[str],
                 *, full: bool, dry_run: bool, on_progress: Callable[[str, FlowCounts], None] | None,
                 on_finished: Callable[[str], None] | None, bulk: bool | None = None) -> None:
        self.job, self.store, self.connectors, self.names, self.replay = job, store, connectors, names, replay
        self.full, self.dry_run, self.on_progress, self.on_finished = full, dry_run, on_progress, on_finished
        self.bulk = bulk  # forced onto (True) or off (False) the bulk path, or None: by bulk.min_records
        self.report = RunReport()
        self.holder = runner_id()
        self.links = job.flows.links_of(names)
        self.link_reasons = LinkReasons(job.flows, connectors)
        self.skipped: set[str] = set()  # flows this run left to another runner (lease held), and the flows after them

    async def bind(self, *, rebind: bool) -> None:
        """Check that the services are the ones the state belongs to; after a deliberate move, re-sync."""
        job = self.job
        try:
            observed = await observe(job.env, self.connectors)
        except ServiceDown as exc:
            self.report.outages[exc.service] = exc
            return
        rebound = await bind(self.store, job.env.name, observed, job.flows, rebind=rebind, dry_run=self.dry_run)
        if rebound is None:
            return
        self.replay += [name for name in rebound.replay if name in self.names]
        await _forget_optouts(job, self.connectors, self.store)
        log.warning("state of environment %s rebound to the services it reaches now (%s): flows %s "
                    "re-synced by key, %s read in full", job.env.name, ", ".join(rebound.services),
                    ", ".join(rebound.replay) or "none", ", ".join(rebound.reread) or "none",
                    extra={"event": "run.rebound", "services": rebound.services})

    async def flows(self) -> None:
        # Flows of one stage share nothing but the services' limits (which the HTTP layer enforces): they
        # run at once, so one flow's reads overlap another's writes.
        report = self.report
        for stage in stages(self.names, self.links, self.job.flows):
            if report.outages:
                # A service is down: the flows after it would wait out the same outage (or another) one by one.
                report.flows.extend(FlowResult(name, FlowCounts(), 0.0, outcome="skipped") for name in stage)
                continue
            report.flows.extend(await _all_or_none(_finishing(self.flow(name), name, self.on_finished)
                                                   for name in stage))

    async def flow(self, name: str) -> FlowResult:
        waits_for = sorted(self.links[name] & self.skipped)
        if waits_for and not self.dry_run:
            self.skipped.add(name)
            why = (f"skipped: it links to {_flows(waits_for)}, which another runner is running; "
                   "it runs once that run is done")
            self.report.errors.append(f"flow {name}: {why}")
            log.warning("flow %s %s", name, why, extra={"event": "run.flow_skipped", "flow": name})
            return FlowResult(name, FlowCounts(), 0.0, outcome="skipped")
        flow, job, connectors = self.job.flows[name], self.job, self.connectors
        target = target_for(flow, connectors)
        route = route_for(flow, job.env, connectors, target, self.store, forced=self.bulk,
                          links_to=sorted(self.links[name]))
        runner = FlowRunner(flow, source_for(flow, connectors), target, self.store,
                            environment=job.env.name, holder=self.holder, dry_run=self.dry_run,
                            on_progress=self.on_progress, link_tables=job.link_tables(), links_to=self.links[name],
                            link_reasons=self.link_reasons, bulk=route)
        try:
            return await runner.run(full=self.full, replay=name in self.replay)
        except ConfigError:
            raise  # a setting is wrong: nothing else will work either
        except ServiceDown as exc:
            # Said once per service when the run ends (``RunReport.outage_lines``), not once per flow.
            self.report.outages.setdefault(exc.service, exc)
            runner.result.outcome = "failed"
        except SyncError as exc:
            # This flow cannot go on (lease held, service refusing); the others still run.
            self.report.errors.append(f"flow {name}: {exc}")
            log.error("flow %s stopped: %s", name, exc, extra={"event": "run.flow_failed", "flow": name})
            runner.result.outcome = "skipped" if isinstance(exc, LeaseHeld) else "failed"
            if isinstance(exc, LeaseHeld):
                self.skipped.add(name)
        return runner.result

    async def optouts(self) -> None:
        try:
            self.report.optouts = await _run_optouts(
                self.job, self.connectors, self.store, dry_run=self.dry_run, holder=self.holder,
                skipped=self.skipped, errors=self.report.errors, on_progress=self.on_progress,
                on_finished=self.on_finished)
        except ServiceDown as exc:
            self.report.outages.setdefault(exc.service, exc)

    async def count_waiting(self) -> None:
        """Creates sent but unconfirmed when a service stopped the run: the next run looks them up first."""
        unfinished = [r.flow for r in self.report.flows if r.outcome != "ok"]
        self.report.waiting = await asyncio.to_thread(
            lambda: sum(len(self.store.pending_writes(flow)) for flow in unfinished))


async def _finishing(work: Awaitable[Any], name: str, on_finished: Callable[[str], None] | None) -> Any:
    """``work``, then tell the progress display that ``name`` is done (its clock stops)."""
    try:
        return await work
    finally:
        if on_finished is not None:
            on_finished(name)


async def _all_or_none(coroutines: Iterable[Coroutine[Any, Any, FlowResult]]) -> list[FlowResult]:
    """Run the flows of a stage at once. When one stops the run (a wrong setting, a service down), the others
    are cancelled and awaited: each records its outcome and releases its lease before the store closes."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _forget_optouts(job: Job, connectors: Connectors, store: StateStore) -> None:
    """After a rebind the opt-out rules start over: their delta link and per-pair values describe the old
    services (with no history, an opt-out on either side wins)."""
    if not job.flows.optouts or connectors.d365 is None or connectors.campaign is None:
        return
    from mapsync.engine.optout import OptOutSync

    for rule in job.flows.optouts.values():
        sync = OptOutSync(rule, d365=connectors.d365, campaign=connectors.campaign, store=store, dry_run=False)
        await asyncio.to_thread(sync.forget)


async def _run_optouts(job: Job, connectors: Connectors, store: StateStore, *, dry_run: bool, holder: str,
                       skipped: set[str], errors: list[str],
                       on_progress: Callable[[str, FlowCounts], None] | None = None,
                       on_finished: Callable[[str], None] | None = None) -> list[Any]:
    """Each rule under its own lease (``optout:<name>``): two runners never write the same change twice."""
    if not job.flows.optouts:
        return []
    from mapsync.engine.optout import OptOutSync

    results = []
    for rule in job.flows.optouts.values():
        if connectors.d365 is None or connectors.campaign is None:
            raise ConfigError(f"opt-out rule {rule.name} needs both `d365` and `campaign` settings", setting="d365")
        sync = OptOutSync(rule, d365=connectors.d365, campaign=connectors.campaign, store=store, dry_run=dry_run)
        if sync.via in skipped and not dry_run:
            why = f"skipped: its pairs come from {_flows([sync.via])}, which another runner is running"
            errors.append(f"optout {rule.name}: {why}")
            log.warning("optout %s %s", rule.name, why, extra={"event": "run.optout_skipped", "optout": rule.name})
            continue
        shown = f"opt-out {rule.name}"  # its own line in the progress display while it reads both sides
        if on_progress is not None:
            on_progress(shown, FlowCounts())
        try:
            if dry_run:
                result = await _finishing(sync.run(), shown, on_finished)
            else:
                async with leases.held(store, sync.flow, job.env.name, holder):
                    result = await _finishing(sync.run(), shown, on_finished)
        except LeaseHeld as exc:
            errors.append(f"optout {rule.name}: skipped: {exc}")
            log.warning("optout %s skipped: %s", rule.name, exc, extra={"event": "run.optout_skipped",
                                                                       "optout": rule.name})
            continue
        if on_progress is not None:
            on_progress(shown, FlowCounts(read=result.pairs, updated=result.written_to_campaign + result.written_to_d365,
                                          failed=result.failed, unchanged=max(0, result.pairs - result.written_to_campaign
                                                                              - result.written_to_d365 - result.failed)))
        results.append(result)
    return results


def _flows(names: Sequence[str]) -> str:
    return ("flow " if len(names) == 1 else "flows ") + ", ".join(names)



def run_sync(job: Job, **kwargs: Any) -> RunReport:
    """``run_job`` for callers without an event loop (scripts, notebooks)."""
    return asyncio.run(run_job(job, **kwargs))
