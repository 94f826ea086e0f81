"""``$filter``, ``$select``, ``$orderby`` and ``$top`` over small in-memory collections of JSON records: the
metadata definitions (``EntityDefinitions`` and its collections) and the SDK message tables.

The filter text is parsed by the same parser as table queries (``mapsync.emulators.dataverse.odata``), after the
two extensions these collections use are rewritten into it: a path to an expanded record's property
(``sdkmessageid/name``) and an enum literal (``Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'``). Parameter
aliases (``@message`` with ``&@message='Create'``) are replaced by their values first, as OData defines.
String comparisons are case-insensitive, as in Dataverse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mapsync.emulators.dataverse.errors import DataverseError
from mapsync.emulators.dataverse.odata import (
    And,
    Call,
    Compare,
    Literal,
    Node,
    Not,
    Or,
    Prop,
    parse_filter,
    parse_orderby,
)

__all__ = ["Record", "query_records", "record_filter"]

Record = dict[str, Any]
_STRING = re.compile(r"'(?:[^']|'')*'")
_ENUM = re.compile(r"(?<![A-Za-z0-9_'.])(?:Microsoft\.Dynamics\.CRM\.)?[A-Z][A-Za-z]*'((?:[^']|'')*)'")
_PATH = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)/([A-Za-z_][A-Za-z0-9_]*)\b")
_ALIAS = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
_SEP = "__"  # joins a path's segments into one property name the parser accepts


def _rewrite(text: str, params: Mapping[str, str]) -> str:
    def alias(m: re.Match[str]) -> str:
        value = params.get("@" + m.group(1))
        if value is None:
            raise DataverseError("query_syntax", detail=f"The parameter alias '@{m.group(1)}' has no value.")
        return value

    text = _outside_strings(text, lambda part: _ALIAS.sub(alias, part))
    text = _ENUM.sub(lambda m: f"'{m.group(1)}'", text)
    return _outside_strings(text, lambda part: _PATH.sub(lambda m: m.group(1) + _SEP + m.group(2), part))


def _outside_strings(text: str, change: Callable[[str], str]) -> str:
    out, pos = [], 0
    for m in _STRING.finditer(text):
        out += [change(text[pos:m.start()]), m.group()]
        pos = m.end()
    out.append(change(text[pos:]))
    return "".join(out)


def _value(node: Node, record: Record) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Prop):
        value: Any = record
        for part in node.name.split(_SEP):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict) and "Value" in value:  # managed properties: {"Value": ...}
            value = value["Value"]
        return value
    return _test(node, record)


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _compare(op: str, left: Any, right: Any) -> bool:
    left, right = _norm(left), _norm(right)
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]
    except TypeError:
        return False


def _test(node: Node, record: Record) -> bool:
    if isinstance(node, And):
        return _test(node.left, record) and _test(node.right, record)
    if isinstance(node, Or):
        return _test(node.left, record) or _test(node.right, record)
    if isinstance(node, Not):
        return not _test(node.operand, record)
    if isinstance(node, Compare):
        return _compare(node.op, _value(node.left, record), _value(node.right, record))
    if isinstance(node, Call):
        haystack, needle = (_norm(_value(a, record)) for a in node.args)
        if not isinstance(haystack, str) or not isinstance(needle, str):
            return False
        return {"contains": needle in haystack, "startswith": haystack.startswith(needle),
                "endswith": haystack.endswith(needle)}[node.func]
    return bool(_value(node, record))


def record_filter(text: str, params: Mapping[str, str]) -> Callable[[Record], bool]:
    """A predicate over records for a ``$filter`` text (with its parameter aliases from ``params``)."""
    node = parse_filter(_rewrite(text, params))
    return lambda record: _test(node, record)


def query_records(records: Sequence[Record], params: Mapping[str, str], *,
                  filter_params: Mapping[str, str] | None = None) -> list[Record]:
    """``$filter``, ``$orderby`` and ``$top`` of ``params`` applied to ``records`` (selection is the caller's)."""
    out = list(records)
    if params.get("$filter"):
        keep = record_filter(params["$filter"], filter_params if filter_params is not None else params)
        out = [r for r in out if keep(r)]
    if params.get("$orderby"):
        for order in reversed(parse_orderby(params["$orderby"])):
            out.sort(key=lambda r, o=order: (r.get(o.name) is not None, _norm(r.get(o.name))), reverse=order.descending)
    if params.get("$top"):
        if not params["$top"].isdigit():
            raise DataverseError("query_syntax", detail=f"Invalid value '{params['$top']}' for $top query option found.")
        out = out[: int(params["$top"])]
    return out
