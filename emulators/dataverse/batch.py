"""``$batch`` bodies: parse multipart/mixed requests (with change sets) and render multipart responses.

Request parts are ``Content-Type: application/http`` + ``Content-Transfer-Encoding: binary`` wrapping a raw
HTTP request; a change set is a nested ``multipart/mixed`` part whose requests carry ``Content-ID``. The
reply mirrors it: ``--batchresponse_<uuid>`` parts each holding one raw HTTP response, change sets as
``changesetresponse_<uuid>`` with the Content-IDs echoed.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus

from mapsync.emulators.dataverse.errors import DataverseError

__all__ = ["BatchRequest", "ChangeSet", "PartResponse", "boundary_of", "parse_batch", "render_batch"]

_HEAD_SPLIT = re.compile(r"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeSet:
    requests: tuple[BatchRequest, ...]


@dataclass(slots=True)
class PartResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_id: str | None = None


def boundary_of(content_type: str) -> str | None:
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return m.group(1).strip() if m else None


def _headers(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise DataverseError("batch_malformed", detail=f"The header line '{line[:80]}' is not valid.")
        out[name.strip().lower()] = value.strip()
    return out


def _parts(text: str, boundary: str) -> list[str]:
    delimiter = "--" + boundary
    chunks = text.split(delimiter)
    if len(chunks) < 2:
        raise DataverseError("batch_malformed", detail=f"The batch body does not contain the boundary '{boundary}'.")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        if chunk.startswith("\r\n"):
            chunk = chunk[2:]
        elif chunk.startswith("\n"):
            chunk = chunk[1:]
        if chunk.endswith("\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith("\n"):
            chunk = chunk[:-1]
        parts.append(chunk)
    return parts


def _split_head(part: str) -> tuple[str, str]:
    pieces = _HEAD_SPLIT.split(part, maxsplit=1)
    return (pieces[0], pieces[1]) if len(pieces) == 2 else (pieces[0], "")


def _http_request(raw: str, content_id: str | None) -> BatchRequest:
    head, body = _split_head(raw)
    lines = head.splitlines()
    if not lines:
        raise DataverseError("batch_malformed", detail="A batch part contains no request line.")
    request_line = lines[0].split()
    if len(request_line) < 2:
        raise DataverseError("batch_malformed", detail=f"The request line '{lines[0][:80]}' is not valid.")
    return BatchRequest(
        method=request_line[0].upper(),
        url=request_line[1],
        headers=_headers("\n".join(lines[1:])),
        body=body.strip().encode("utf-8"),
        content_id=content_id,
    )


def parse_batch(body: bytes, content_type: str) -> list[BatchRequest | ChangeSet]:
    boundary = boundary_of(content_type)
    if not content_type.lower().startswith("multipart/mixed") or not boundary:
        raise DataverseError("batch_malformed",
                             detail="The content type of a batch request must be multipart/mixed with a boundary.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DataverseError("batch_malformed", detail="The batch body is not valid UTF-8.") from None
    items: list[BatchRequest | ChangeSet] = []
    for part in _parts(text, boundary):
        head, content = _split_head(part)
        headers = _headers(head)
        ctype = headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            inner = boundary_of(ctype)
            if not inner:
                raise DataverseError("batch_malformed", detail="A change set has no boundary.")
            requests = []
            for sub in _parts(content, inner):
                sub_head, sub_content = _split_head(sub)
                sub_headers = _headers(sub_head)
                requests.append(_http_request(sub_content, sub_headers.get("content-id")))
            items.append(ChangeSet(tuple(requests)))
        elif ctype.lower().startswith("application/http"):
            items.append(_http_request(content, headers.get("content-id")))
        else:
            raise DataverseError("batch_malformed", detail=f"The batch part content type '{ctype}' is not supported.")
    return items


def _render_response(r: PartResponse) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if r.content_id is not None:
        lines.append(f"Content-ID: {r.content_id}")
    try:
        reason = HTTPStatus(r.status).phrase
    except ValueError:
        reason = ""
    lines += ["", f"HTTP/1.1 {r.status} {reason}"]
    lines += [f"{k}: {v}" for k, v in r.headers]
    lines += ["", r.body.decode("utf-8")]
    return "\r\n".join(lines)


def render_batch(items: list[PartResponse | list[PartResponse]]) -> tuple[bytes, str]:
    """The multipart body and its Content-Type for a batch reply."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    out = []
    for item in items:
        out.append(f"--{boundary}")
        if isinstance(item, list):
            cs = f"changesetresponse_{uuid.uuid4()}"
            out.append(f"Content-Type: multipart/mixed; boundary={cs}")
            out.append("")
            for r in item:
                out.append(f"--{cs}")
                out.append(_render_response(r))
            out.append(f"--{cs}--")
        else:
            out.append(_render_response(item))
    out.append(f"--{boundary}--")
    out.append("")
    return "\r\n".join(out).encode("utf-8"), f"multipart/mixed; boundary={boundary}"
