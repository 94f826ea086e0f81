"""Conformance against the vendors' own examples.

Each file in ``fixtures/`` is one documented example (request and reply) as Microsoft or Adobe publish it,
with the page it comes from in ``source``. The tests check (a) that our connectors parse the documented
reply, served byte for byte, and (b) that the emulator's reply to the same request has the same shape:
the documented keys with the same JSON types, the documented headers and content type, and the order
where the documentation promises one. Placeholders of the examples (``[Organization URI]``,
``<ORGANIZATION>``) are replaced by the base URLs the tests use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.emulators.server import Emulator

FIXTURES = Path(__file__).parent / "fixtures"
DV_BASE = "https://org.example"
ADOBE_BASE = "https://adobe.example"
API = "/api/data/v9.2"


def load(name: str, *, organization: str = "mapsync-demo") -> dict[str, Any]:
    """A fixture with its placeholders replaced by the test base URLs."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    for placeholder in ("[Organization URI]", "[Organization Uri]"):
        text = text.replace(placeholder, DV_BASE)
    text = text.replace("https://mc.adobe.io/<ORGANIZATION>", f"{ADOBE_BASE}/{organization}")
    data: dict[str, Any] = json.loads(text)
    assert data["source"].startswith("https://"), "every fixture names the page it comes from"
    return data


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def assert_same_shape(documented: Any, actual: Any, *, path: str = "$", ignore: Iterable[str] = ()) -> None:
    """Every documented key is in ``actual`` with the same JSON type, recursively (null matches any type:
    a documented null only says the property is there). Keys named in ``ignore`` are skipped."""
    skip = set(ignore)
    if documented is None:
        return
    assert kind(actual) == kind(documented) or actual is None, f"{path}: {kind(documented)} expected, got {actual!r}"
    if isinstance(documented, dict):
        for key, value in documented.items():
            if key in skip:
                continue
            assert key in actual, f"{path}: the documented key {key!r} is missing (has {sorted(actual)})"
            assert_same_shape(value, actual[key], path=f"{path}.{key}", ignore=skip)
    elif isinstance(documented, list) and documented and actual:
        for i, item in enumerate(documented):
            assert_same_shape(item, actual[min(i, len(actual) - 1)], path=f"{path}[{i}]", ignore=skip)


def media_type(content_type: str) -> list[str]:
    """A content type's parts, normalised (order of parameters kept, spaces dropped)."""
    return [p.strip().lower() for p in content_type.split(";") if p.strip()]


class Replay:
    """An ``httpx`` transport that serves documented replies by URL and records what was asked."""

    def __init__(self, replies: Mapping[str, httpx.Response] | Callable[[httpx.Request], httpx.Response]) -> None:
        self.replies = replies
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if callable(self.replies):
            return self.replies(request)
        url = str(request.url)
        if url not in self.replies:
            raise AssertionError(f"no documented reply for {url}")
        return self.replies[url]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def documented_response(reply: Mapping[str, Any]) -> httpx.Response:
    headers = dict(reply.get("headers", {}))
    if "body_text" in reply:
        return httpx.Response(reply["status"], headers=headers, content=reply["body_text"].encode())
    headers.setdefault("Content-Type", "application/json; odata.metadata=minimal")
    return httpx.Response(reply["status"], headers=headers, content=json.dumps(reply["body"]).encode())


class StaticTokens:
    async def token(self, *, stale: str | None = None) -> str:
        return "documented-example-token"


async def no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(seed=5, contacts=12)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
