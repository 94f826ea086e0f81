"""Small OData helpers for the Dataverse Web API: literals, key segments, and ``$batch`` bodies and replies."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from mapsync.dsl.literals import odata_quote
from mapsync.engine.errors import RequestError, TransientError

__all__ = [
    "BatchPart",
    "BatchReply",
    "build_batch",
    "entity_id_from",
    "key_segment",
    "literal",
    "parse_batch",
]

GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def literal(value: Any) -> str:
    """An OData ``$filter`` literal: strings quoted with ``'`` doubled, GUIDs bare, dates ISO with Z."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo else value.isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    if GUID_RE.fullmatch(text):
        return text
    return odata_quote(text)


def key_segment(target_id: str | None = None, alternate_key: tuple[str, str] | None = None) -> str:
    """``(guid)`` or ``(column='value')`` for a record address, percent-encoded for a URL path."""
    if target_id is not None:
        return f"({target_id})"
    if alternate_key is None:
        raise RequestError("a record address needs an id or an alternate key")
    column, value = alternate_key
    quoted = odata_quote(str(value))
    return f"({column}={quote(quoted, safe=chr(39) + '@:$,;=+!*()')})"


def entity_id_from(header: str | None) -> str | None:
    """The GUID in an ``OData-EntityId`` header (``.../contacts(<guid>)``)."""
    if not header:
        return None
    found = GUID_RE.findall(header)
    return found[-1] if found else None


@dataclass(frozen=True, slots=True)
class BatchPart:
    method: str
    url: str  # absolute, or relative to the service root
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class BatchReply:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


def build_batch(parts: Sequence[BatchPart], *, boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of a ``$batch`` with each part its own request (no change set: not atomic)."""
    boundary = boundary or f"batch_{uuid.uuid4().hex}"
    out: list[str] = []
    for part in parts:
        out.append(f"--{boundary}")
        out.append("Content-Type: application/http")
        out.append("Content-Transfer-Encoding: binary")
        out.append("")
        out.append(f"{part.method} {part.url} HTTP/1.1")
        headers = dict(part.headers or {})
        if part.body is not None:
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        out.extend(f"{k}: {v}" for k, v in headers.items())
        out.append("")
        out.append(json.dumps(part.body, separators=(",", ":"), ensure_ascii=False) if part.body is not None else "")
    out.append(f"--{boundary}--")
    out.append("")
    return f"multipart/mixed; boundary={boundary}", "\r\n".join(out).encode("utf-8")


def _boundary_of(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return match.group(1) if match else None


def _split_head(blob: bytes) -> tuple[list[str], bytes]:
    """Header lines and the rest, at the first blank line (CRLF or LF)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = blob.find(sep)
        if idx >= 0:
            return blob[:idx].decode("utf-8", "replace").splitlines(), blob[idx + len(sep):]
    return blob.decode("utf-8", "replace").splitlines(), b""


def parse_batch(content_type: str, body: bytes) -> list[BatchReply]:
    """The raw HTTP responses of a ``$batch`` reply, in order (change-set replies are flattened)."""
    boundary = _boundary_of(content_type)
    if boundary is None:
        # Whatever the service did with the parts is unknown: like a reply cut short, worth resending.
        raise TransientError("d365: $batch reply without a multipart boundary", service="d365")
    replies: list[BatchReply] = []
    delimiter = b"--" + boundary.encode()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.lstrip(b"\r\n")
        head_lines, rest = _split_head(chunk)
        head = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head_lines)}
        inner_type = head.get("content-type", "")
        if inner_type.lower().startswith("multipart/mixed"):
            replies.extend(parse_batch(inner_type, rest))
            continue
        status_and_headers, payload = _split_head(rest)
        if not status_and_headers:
            continue
        status = int(status_and_headers[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in status_and_headers[1:])}
        replies.append(BatchReply(status, headers, payload.rstrip(b"\r\n")))
    return replies
