"""A hypothesis state machine of the retry layer: random fault sequences, checked against a small model.

Each ``send`` draws a script of faults for one request (the wire answers them in order, then 200) and
whether the request is safe to repeat. The model predicts, from the policy alone, how the request ends
and after how many attempts; the machine checks the client agrees, that attempts are bounded, that a
request that is not idempotent is never *processed* twice, and that every 429 was waited out.
"""

from __future__ import annotations

import asyncio
import itertools

import httpx
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mapsync.engine.config import ServiceLimits
from mapsync.engine.errors import AuthRejected, TerminalError, TransientError
from mapsync.engine.http import MAX_TOKEN_REFRESHES, AttemptRecord, HttpClient, RetryBudget

MAX_RETRIES = 4
FAULTS = ["ok", "429", "500", "503", "400", "401", "connect", "read", "timeout"]
# Faults after which the service did not process the request (a non-idempotent POST may be resent).
UNPROCESSED = {"429", "401", "connect"}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class Tokens:
    def __init__(self) -> None:
        self.n = 1

    async def token(self, *, stale: str | None = None) -> str:
        if stale == f"tok{self.n}":
            self.n += 1
        return f"tok{self.n}"


class RetryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.scripts: dict[str, list[str]] = {}
        self.processed: dict[str, int] = {}
        self.arrived: dict[str, int] = {}
        self.records: list[AttemptRecord] = []
        self.budget_model = 6.0
        self.client = HttpClient(
            # The circuit breaker (an outage bound on the clock) has tests of its own: never reached here.
            "campaign", ServiceLimits(concurrency=3, max_retries=MAX_RETRIES, outage_seconds=1e9), Tokens(),
            transport=httpx.MockTransport(self.handler), base_url="https://api.example/",
            clock=self.clock.now, sleep=self.clock.sleep, rng=lambda: 0.5,
            budget=RetryBudget(ratio=0.25, reserve=6.0), observer=self.records.append,
        )
        self.count = 0
        self.accepted = False  # the service has taken one of the client's tokens

    def handler(self, request: httpx.Request) -> httpx.Response:
        rid = request.url.path.rsplit("/", 1)[-1]
        script = self.scripts[rid]
        fault = script.pop(0) if script else "ok"
        if fault == "connect":
            raise httpx.ConnectError("refused", request=request)
        self.arrived[rid] = self.arrived.get(rid, 0) + 1
        if fault not in UNPROCESSED:
            self.processed[rid] = self.processed.get(rid, 0) + 1
        if fault == "read":
            raise httpx.ReadError("reset", request=request)
        if fault == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if fault == "ok":
            return httpx.Response(200, json={"id": rid})
        if fault == "429":
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"error_code": "429050"})
        if fault == "401":
            return httpx.Response(401, json={"error_code": "401013"})
        return httpx.Response(int(fault), json={"error_code": f"E{fault}", "message": "scripted"})

    def predict(self, script: list[str], safe: bool) -> tuple[str, int]:
        """(outcome: 'ok' | 'transient' | 'terminal' | 'auth', attempts) from the documented policy alone."""
        attempts, refreshes, retries = 0, 0, 0
        for fault in [*script, "ok"]:
            attempts += 1
            if fault == "ok":
                return "ok", attempts
            if fault == "401":
                # A 401 after renewal is the credentials' fault (issue 12): a configuration error, raised
                # at once when no token of this client ever worked, else after the last renewal.
                if refreshes == MAX_TOKEN_REFRESHES or (refreshes and not self.accepted):
                    return "auth", attempts
                refreshes += 1
                continue
            if fault == "400":
                return "terminal", attempts
            retriable = safe or fault in ("connect", "429")
            if not retriable or retries >= MAX_RETRIES:
                return "transient", attempts
            if fault != "429":
                if self.budget_model < 1.0:
                    return "transient", attempts
                self.budget_model -= 1.0
            retries += 1
        raise AssertionError("unreachable")

    @rule(script=st.lists(st.sampled_from(FAULTS), max_size=7), method=st.sampled_from(["GET", "POST", "PATCH"]),
          marked=st.booleans())
    def send(self, script: list[str], method: str, marked: bool) -> None:
        self.count += 1
        rid = f"r{self.count}"
        self.scripts[rid] = list(script)
        safe = method == "GET" or marked
        self.budget_model = min(6.0, self.budget_model + 0.25)
        expected, expected_attempts = self.predict(script, safe)
        start = len(self.records)

        async def go() -> str:
            try:
                resp = await self.client.request(method, rid, json={"n": 1}, idempotent=None if method == "GET" else marked)
            except AuthRejected:
                return "auth"
            except TransientError:
                return "transient"
            except TerminalError:
                return "terminal"
            assert resp.json() == {"id": rid}
            return "ok"

        outcome = self.loop.run_until_complete(go())
        self.accepted = self.accepted or outcome == "ok"
        mine = self.records[start:]
        assert outcome == expected, (script, method, marked, outcome, expected)
        assert len(mine) == expected_attempts
        assert len(mine) <= MAX_RETRIES + 1 + MAX_TOKEN_REFRESHES  # first try, retries, token refreshes
        if not safe:
            assert self.processed.get(rid, 0) <= 1, "a request that is not idempotent was processed twice"
        for before, after in itertools.pairwise(mine):
            if before.status == 429:
                assert after.sent_at - before.sent_at >= 3.0 - 1e-9

    @precondition(lambda self: self.count > 0)
    @rule(seconds=st.floats(min_value=0, max_value=50))
    def time_passes(self, seconds: float) -> None:
        self.clock.t += seconds

    @invariant()
    def limiter_is_idle_and_bounded(self) -> None:
        lim = self.client.limiter
        assert lim.in_flight == 0
        assert 1 <= lim.limit <= lim.ceiling == 3
        assert lim.max_in_flight <= 3

    @invariant()
    def budget_matches_model(self) -> None:
        assert abs(self.client.budget.balance - self.budget_model) < 1e-9

    def teardown(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


RetryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=12, deadline=None)
TestRetryMachine = RetryMachine.TestCase
