"""The function library of the mapping language (docs/language.md, "Expressions").

``FUNCTIONS`` maps each name to a ``FunctionSpec``: what the checker needs (arity, parameter and
result types, the null rule) and what the compiled mapping calls (``impl``). ``label``, ``link`` and
``contact`` are *special forms*: registered here so the checker knows them, compiled by the compiler
itself (they need the schema or other flows), so their ``impl`` is None.

Null rule: a null argument gives a null result, unless the spec says ``null_propagating=False``
(``concat``, ``coalesce``, ``if``, ``now``). Every impl applies the rule itself, so calling ``impl``
directly is always correct.

Run-time failures on a record's data (``number("abc")``, a bad regex, ``date("garbage")``) raise
``FunctionError``; the compiler turns it into a rejected record. No other exception escapes an impl
for wrong *values*; wrong *types* are the checker's job, but are reported as ``FunctionError`` too.

The impls run on every record (target: >100k records/s for a whole mapping), so they are plain,
branch on ``type(x) is ...`` first, and never compile a fixed regex per call.

``docs/functions.md`` is generated from the specs: ``python -m mapsync.dsl.functions --markdown > docs/functions.md``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import inspect
import math
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from mapsync.dsl.types import ValueType, common_type, type_of
from mapsync.errors import RecordError

__all__ = [
    "FUNCTIONS",
    "CommonOf",
    "FunctionError",
    "FunctionSpec",
    "SameAs",
    "examples",
    "from_wire",
    "function_markdown",
    "render_markdown",
    "to_wire",
]

UTC = dt.UTC
_T, _N, _B = ValueType.TEXT, ValueType.NUMBER, ValueType.BOOLEAN
_D, _DT, _L, _ANY = ValueType.DATE, ValueType.DATETIME, ValueType.LIST, ValueType.ANY


class FunctionError(RecordError):
    """A function could not compute a value from this record's data. The record is rejected, not the run."""

    def __init__(self, message: str, *, function: str) -> None:
        super().__init__(message)
        self.function = function


@dataclass(frozen=True, slots=True)
class SameAs:
    """Result type rule: the type of argument ``index``."""

    index: int


@dataclass(frozen=True, slots=True)
class CommonOf:
    """Result type rule: the common type of the arguments from ``start`` on (``coalesce``, ``if``)."""

    start: int


ReturnRule = ValueType | SameAs | CommonOf


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function of the language: its contract for the checker and its implementation."""

    name: str
    impl: Callable[..., Any] | None  # None for special forms, which the compiler implements
    params: tuple[str, ...]  # parameter names, for signatures and diagnostics
    param_types: tuple[ValueType, ...]  # for a variadic function the last type repeats
    min_args: int
    max_args: int | None  # None = variadic
    returns: ReturnRule
    null_propagating: bool = True
    special: bool = False
    doc: str = ""

    def param_type(self, index: int) -> ValueType:
        return self.param_types[min(index, len(self.param_types) - 1)]

    def result_type(self, arg_types: Sequence[ValueType]) -> ValueType:
        """The result type for these argument types (already checked for arity)."""
        rule = self.returns
        if isinstance(rule, ValueType):
            return rule
        if isinstance(rule, SameAs):
            return arg_types[rule.index] if rule.index < len(arg_types) else _ANY
        result = ValueType.NULL
        for t in arg_types[rule.start :]:
            result = common_type(result, t)
        return result

    @property
    def summary(self) -> str:
        return self.doc.split("\n", 1)[0]

    def signature(self) -> str:
        """``truncate(x: text, n: number) -> text``; variadic: ``concat(x: any, ...) -> text``."""
        parts = []
        for i, name in enumerate(self.params):
            optional = "" if i < self.min_args else "?"
            parts.append(f"{name}{optional}: {self.param_type(i)}")
        if self.max_args is None:
            parts.append("...")
        return f"{self.name}({', '.join(parts)}) -> {_describe_rule(self)}"


def _describe_rule(spec: FunctionSpec) -> str:
    rule = spec.returns
    if isinstance(rule, ValueType):
        return str(rule)
    if isinstance(rule, SameAs):
        return f"type of {spec.params[rule.index]}"
    return "common type of " + ", ".join(spec.params[rule.start :]) + (", ..." if spec.max_args is None else "")


FUNCTIONS: dict[str, FunctionSpec] = {}


def _register(
    name: str,
    params: dict[str, ValueType],
    returns: ReturnRule,
    *,
    min_args: int | None = None,
    variadic: bool = False,
    null_propagating: bool = True,
    special: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(impl: Callable[..., Any]) -> Callable[..., Any]:
        FUNCTIONS[name] = FunctionSpec(
            name=name,
            impl=None if special else impl,
            params=tuple(params),
            param_types=tuple(params.values()),
            min_args=len(params) if min_args is None else min_args,
            max_args=None if variadic else len(params),
            returns=returns,
            null_propagating=null_propagating,
            special=special,
            doc=inspect.cleandoc(impl.__doc__ or ""),
        )
        return impl

    return decorate


def _wrong_type(function: str, value: object, expected: str) -> FunctionError:
    return FunctionError(f"{function}() expects {expected}, got {_kind(value)} {_short(value)}", function=function)


def _kind(value: object) -> str:
    return str(type_of(value))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(function: str, n: object) -> int:
    """A character count or position argument: a non-negative whole number."""
    if type(n) is int and n >= 0:
        return n
    if isinstance(n, float | decimal.Decimal):
        try:
            whole = int(n)  # NaN raises ValueError, infinity OverflowError
        except (ValueError, OverflowError):
            whole = -1
        if whole >= 0 and whole == n:
            return whole
    raise FunctionError(f"{function}() needs a whole number >= 0, got {_short(n)}", function=function)


# --------------------------------------------------------------------------------------------- text


@_register("lower", {"x": _T}, _T)
def lower(x: str | None) -> str | None:
    """Lower-case text.

    lower("ANN") -> "ann"
    lower("Émile") -> "émile"
    lower(null) -> null
    """
    if x is None:
        return None
    try:
        return x.lower()
    except AttributeError:
        raise _wrong_type("lower", x, "text") from None


@_register("upper", {"x": _T}, _T)
def upper(x: str | None) -> str | None:
    """Upper-case text.

    upper("wvwzzz1jz3w386752") -> "WVWZZZ1JZ3W386752"
    upper(null) -> null
    """
    if x is None:
        return None
    try:
        return x.upper()
    except AttributeError:
        raise _wrong_type("upper", x, "text") from None


@_register("trim", {"x": _T}, _T)
def trim(x: str | None) -> str | None:
    """Remove spaces, tabs and line breaks (any Unicode white space) at both ends.

    trim("  Ann ") -> "Ann"
    trim("") -> ""
    trim(null) -> null
    """
    if x is None:
        return None
    try:
        return x.strip()
    except AttributeError:
        raise _wrong_type("trim", x, "text") from None


# A word: letters/digits, possibly joined by apostrophes ("o'neil", "don't"), so the letter after an
# apostrophe stays lower-case. Hyphens and spaces separate words ("jean-luc" -> "Jean-Luc").
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def _title_word(match: re.Match[str]) -> str:
    word = match.group()
    return word[0].title() + word[1:].lower()


@_register("title", {"x": _T}, _T)
def title(x: str | None) -> str | None:
    """Title case: each word starts with a capital, the rest is lower-case; accents are handled.

    Words are split at spaces, hyphens and punctuation, but not at apostrophes.
    title("ÉMILE ZOLA") -> "Émile Zola"
    title("jean-luc o'neil") -> "Jean-Luc O'neil"
    title("don't stop") -> "Don't Stop"
    title(null) -> null
    """
    if x is None:
        return None
    if type(x) is not str:
        raise _wrong_type("title", x, "text")
    return _WORD.sub(_title_word, x)


@_register("truncate", {"x": _T, "n": _N}, _T)
def truncate(x: str | None, n: int | None) -> str | None:
    """The first n characters of x (characters, not bytes); shorter text is unchanged.

    truncate("Annabelle", 4) -> "Anna"
    truncate("Zoë", 3) -> "Zoë"
    truncate("Ann", 10) -> "Ann"
    truncate("Ann", -1) -> error
    truncate(null, 3) -> null
    """
    if x is None or n is None:
        return None
    if type(n) is not int or n < 0:
        n = _count("truncate", n)
    try:
        return x[:n]
    except TypeError:
        raise _wrong_type("truncate", x, "text") from None


@_register("replace_text", {"x": _T, "old": _T, "new": _T}, _T)
def replace_text(x: str | None, old: str | None, new: str | None) -> str | None:
    """Replace every occurrence of old by new. An empty old changes nothing.

    replace_text("555-0100", "-", "") -> "5550100"
    replace_text("abc", "", "x") -> "abc"
    replace_text(null, "a", "b") -> null
    """
    if x is None or old is None or new is None:
        return None
    if type(x) is not str or type(old) is not str or type(new) is not str:
        raise _wrong_type("replace_text", next(v for v in (x, old, new) if type(v) is not str), "text")
    return x.replace(old, new) if old else x


@_register("substring", {"x": _T, "start": _N, "length": _N}, _T)
def substring(x: str | None, start: int | None, length: int | None) -> str | None:
    """The length characters of x from position start; positions count from 0.

    A range past the end gives what there is, possibly "".
    substring("Annabelle", 0, 4) -> "Anna"
    substring("Annabelle", 4, 10) -> "belle"
    substring("Ann", 5, 2) -> ""
    substring("Ann", -1, 2) -> error
    substring(null, 0, 1) -> null
    """
    if x is None or start is None or length is None:
        return None
    i = _count("substring", start)
    n = _count("substring", length)
    if type(x) is not str:
        raise _wrong_type("substring", x, "text")
    return x[i : i + n]


@_register("split", {"x": _T, "separator": _T}, _L)
def split(x: str | None, separator: str | None) -> list[str] | None:
    """Split text at each separator into a list of text.

    split("a;b;c", ";") -> ["a", "b", "c"]
    split("", ";") -> [""]
    split("abc", "") -> error
    split(null, ";") -> null
    """
    if x is None or separator is None:
        return None
    if type(x) is not str or type(separator) is not str:
        raise _wrong_type("split", x if type(x) is not str else separator, "text")
    if not separator:
        raise FunctionError("split() needs a non-empty separator", function="split")
    return x.split(separator)


@_register("join", {"list": _L, "separator": _T}, _T)
def join(items: Sequence[Any] | None, separator: str | None) -> str | None:
    """Join the items of a list with a separator; null items are left out, others become text.

    join(["a", "b"], ", ") -> "a, b"
    join(["a", null, 3], "-") -> "a-3"
    join([], ",") -> ""
    join(null, ",") -> null
    """
    if items is None or separator is None:
        return None
    if not isinstance(items, list | tuple):
        raise _wrong_type("join", items, "a list")
    if type(separator) is not str:
        raise _wrong_type("join", separator, "text")
    return separator.join(i if type(i) is str else text(i) for i in items if i is not None)  # type: ignore[misc]


@_register("concat", {"x": _ANY}, _T, min_args=1, variadic=True, null_propagating=False)
def concat(*parts: Any) -> str:
    """Join all arguments as text. A null counts as "" (like the & operator); never null.

    concat("Ann", " ", "Lee") -> "Ann Lee"
    concat("Ann", null, "!") -> "Ann!"
    concat("Room ", 12) -> "Room 12"
    concat(null) -> ""
    """
    return "".join(p if type(p) is str else text(p) for p in parts if p is not None)  # type: ignore[misc]


@_register("coalesce", {"x": _ANY}, CommonOf(0), min_args=1, variadic=True, null_propagating=False)
def coalesce(*values: Any) -> Any:
    """The first argument that is not null, or null when all are (like the ?? operator).

    coalesce(null, "b", "c") -> "b"
    coalesce("", "b") -> ""
    coalesce(null, null) -> null
    """
    for value in values:
        if value is not None:
            return value
    return None


# --------------------------------------------------------------------------------------------- conversions


@_register("number", {"x": _ANY}, _N)
def number(x: Any) -> int | float | decimal.Decimal | None:
    """Read a number: whole numbers stay whole; text may have spaces around it; true/false give 1/0.

    Text that is not a finite decimal number (e.g. "abc", "NaN", "1,5") is an error.
    number("42") -> 42
    number(" 3.5 ") -> 3.5
    number("1e3") -> 1000
    number(true) -> 1
    number("abc") -> error
    number(null) -> null
    """
    if x is None:
        return None
    t = type(x)
    if t is int or t is float or t is decimal.Decimal:
        return x  # type: ignore[no-any-return]
    if t is bool:
        return int(x)
    if t is str:
        s = x.strip()
        if "_" not in s:  # int() and float() accept "1_000"; a data value with _ is not a number
            if "." not in s and "e" not in s and "E" not in s:  # skip a costly failed int() on decimals
                try:
                    return int(s)
                except ValueError:
                    pass
            try:
                f = float(s)
            except ValueError:
                pass
            else:
                if math.isfinite(f):
                    return int(f) if f.is_integer() and abs(f) < 2**53 else f
        raise FunctionError(f"number() cannot read {_short(x)} as a number", function="number")
    raise _wrong_type("number", x, "text or a number")


def _datetime_text(value: dt.datetime) -> str:
    value = _as_utc(value)
    return value.replace(tzinfo=None).isoformat() + "Z"


@_register("text", {"x": _ANY}, _T)
def text(x: Any) -> str | None:
    """Write any value as text: numbers without a trailing .0, true/false, ISO 8601 dates in UTC.

    A list becomes its items joined with ",".
    text(42) -> "42"
    text(3.50) -> "3.5"
    text(2.0) -> "2"
    text(true) -> "true"
    text(@2024-01-31) -> "2024-01-31"
    text(@2024-01-31T10:00:00+01:00) -> "2024-01-31T09:00:00Z"
    text([1, 2]) -> "1,2"
    text(null) -> null
    """
    if x is None:
        return None
    t = type(x)
    if t is str:
        return x  # type: ignore[no-any-return]
    if t is bool:
        return "true" if x else "false"
    if t is int:
        return str(x)
    if t is float:
        return str(int(x)) if x.is_integer() else repr(x)
    if isinstance(x, dt.datetime):
        return _datetime_text(x)
    if isinstance(x, dt.date):
        return x.isoformat()
    if isinstance(x, decimal.Decimal | uuid.UUID):
        return str(x)
    if isinstance(x, list | tuple):
        return ",".join(text(i) for i in x if i is not None)  # type: ignore[misc]
    raise _wrong_type("text", x, "a value that has a text form")


# Strict ISO 8601 subset: YYYY-MM-DD, then optionally a time (T or space), seconds, fraction, Z or offset.
# datetime.fromisoformat alone would also accept "20240131" or week dates, which no service sends.
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,9}))?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)


def _parse(function: str, value: str) -> dt.datetime | dt.date:
    s = value.strip()
    match = _DATETIME_RE.fullmatch(s)
    if match is None:
        raise FunctionError(f"{function}() cannot read {_short(value)} as a date or time", function=function)
    try:
        if len(s) == 10:
            return dt.date.fromisoformat(s)
        fraction = match.group(1)
        if fraction is not None and len(fraction) > 6:  # Dataverse may send 7 digits; Python keeps 6
            s = s[: match.start(1) + 6] + s[match.end(1) :]
        return _as_utc(dt.datetime.fromisoformat(s))
    except ValueError as exc:  # e.g. month 13
        raise FunctionError(f"{function}() cannot read {_short(value)}: {exc}", function=function) from None


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC. A datetime without an offset is taken as UTC (both services send UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


@_register("date", {"x": _ANY}, _D)
def date(x: Any) -> dt.date | None:
    """The calendar date of x: ISO 8601 text (Dataverse or Campaign form), a date, or a datetime's UTC day.

    date("2024-01-31") -> @2024-01-31
    date("2024-01-31T23:30:00-02:00") -> @2024-02-01
    date("2019-09-25 23:20:35.000Z") -> @2019-09-25
    date("31/01/2024") -> error
    date(null) -> null
    """
    if x is None:
        return None
    t = type(x)
    if t is dt.date:
        return x  # type: ignore[no-any-return]
    if t is str:
        parsed = _parse("date", x)
        return parsed.date() if isinstance(parsed, dt.datetime) else parsed
    if isinstance(x, dt.datetime):
        return _as_utc(x).date()
    if isinstance(x, dt.date):
        return dt.date(x.year, x.month, x.day)
    raise _wrong_type("date", x, "text, a date or a datetime")


@_register("datetime", {"x": _ANY}, _DT)
def datetime(x: Any) -> dt.datetime | None:
    """A point in time in UTC from ISO 8601 text, a datetime, or a date (its midnight UTC).

    Accepts "Z" or an offset, fractional seconds, and Campaign's "2019-09-25 23:20:35.000Z"; text
    without an offset is taken as UTC.
    datetime("2024-01-31T10:00:00+01:00") -> @2024-01-31T09:00:00Z
    datetime("2019-09-25 23:20:35.000Z") -> @2019-09-25T23:20:35Z
    datetime("2024-01-31") -> @2024-01-31T00:00:00Z
    datetime("yesterday") -> error
    datetime(null) -> null
    """
    if x is None:
        return None
    t = type(x)
    if t is dt.datetime:
        return _as_utc(x)
    if t is str:
        parsed = _parse("datetime", x)
        if isinstance(parsed, dt.datetime):
            return parsed
        return dt.datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
    if isinstance(x, dt.datetime):
        return _as_utc(x)
    if isinstance(x, dt.date):
        return dt.datetime(x.year, x.month, x.day, tzinfo=UTC)
    raise _wrong_type("datetime", x, "text, a date or a datetime")


@_register("now", {}, _DT, null_propagating=False)
def now() -> dt.datetime:
    """The current time in UTC, read once per call."""
    return dt.datetime.now(UTC)


@_register("days", {"n": _N}, ValueType.DURATION)
def days(n: Any) -> dt.timedelta | None:
    """A duration of n days (may be fractional or negative), to add to or subtract from a date or datetime.

    days(2) -> date("2024-01-03") - date("2024-01-01")
    date("2024-01-31") + days(1) -> @2024-02-01
    days("2") -> error
    days(null) -> null
    """
    if n is None:
        return None
    if type(n) is bool or not isinstance(n, int | float | decimal.Decimal):
        raise _wrong_type("days", n, "a number")
    try:
        return dt.timedelta(days=float(n))
    except OverflowError:
        raise FunctionError(f"days() cannot make a duration of {_short(n)} days", function="days") from None


# --------------------------------------------------------------------------------------------- tests


def _text_pair(function: str, x: Any, s: Any) -> NoReturn:
    raise _wrong_type(function, x if type(x) is not str else s, "text")


@_register("contains", {"x": _T, "part": _T}, _B)
def contains(x: str | None, part: str | None) -> bool | None:
    """Whether part occurs in x (case-sensitive; combine with lower() to ignore case).

    contains("ann@example.com", "@example.") -> true
    contains("Ann", "ann") -> false
    contains(null, "a") -> null
    """
    if x is None or part is None:
        return None
    if type(x) is not str or type(part) is not str:
        _text_pair("contains", x, part)
    return part in x


@_register("startswith", {"x": _T, "prefix": _T}, _B)
def startswith(x: str | None, prefix: str | None) -> bool | None:
    """Whether x starts with prefix (case-sensitive).

    startswith("+33 6 12", "+33") -> true
    startswith("Ann", "nn") -> false
    startswith(null, "a") -> null
    """
    if x is None or prefix is None:
        return None
    if type(x) is not str or type(prefix) is not str:
        _text_pair("startswith", x, prefix)
    return x.startswith(prefix)


@_register("endswith", {"x": _T, "suffix": _T}, _B)
def endswith(x: str | None, suffix: str | None) -> bool | None:
    """Whether x ends with suffix (case-sensitive).

    endswith("ann@example.com", ".com") -> true
    endswith("Ann", "A") -> false
    endswith(null, "a") -> null
    """
    if x is None or suffix is None:
        return None
    if type(x) is not str or type(suffix) is not str:
        _text_pair("endswith", x, suffix)
    return x.endswith(suffix)


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    # Patterns are nearly always literals of the mapping: compiled once, reused for every record.
    return re.compile(pattern)


@_register("matches", {"x": _T, "pattern": _T}, _B)
def matches(x: str | None, pattern: str | None) -> bool | None:
    """Whether the regular expression (Python syntax) is found in x; anchor with ^...$ to match all of x.

    matches("AB-1234", "^[A-Z]{2}-[0-9]{4}$") -> true
    matches("xAB-1234x", "[0-9]{4}") -> true
    matches("abc", "^b") -> false
    matches("abc", "(") -> error
    matches(null, "a") -> null
    """
    if x is None or pattern is None:
        return None
    if type(x) is not str or type(pattern) is not str:
        _text_pair("matches", x, pattern)
    try:
        compiled = _compile(pattern)
    except re.error as exc:
        raise FunctionError(f"matches(): invalid regular expression {_short(pattern)}: {exc}", function="matches") from None
    return compiled.search(x) is not None


# Pragmatic, not RFC 5322: one @, 1-64 characters before it, no white space anywhere, and a domain of
# dot-separated non-empty labels with at least one dot. Total length at most 254 (the SMTP path limit).
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+")


@_register("email_valid", {"x": _T}, _B)
def email_valid(x: str | None) -> bool | None:
    """A pragmatic email address check, not RFC 5322.

    True when there is exactly one @ with 1-64 characters before it, no white space, and a domain made
    of non-empty parts separated by dots (at least one dot); at most 254 characters in all.
    email_valid("ann@example.com") -> true
    email_valid("ann@example") -> false
    email_valid("ann @example.com") -> false
    email_valid("ann@@example.com") -> false
    email_valid("ann@example..com") -> false
    email_valid(null) -> null
    """
    if x is None:
        return None
    if type(x) is not str:
        raise _wrong_type("email_valid", x, "text")
    return len(x) <= 254 and _EMAIL.fullmatch(x) is not None


@_register("hash", {"x": _ANY}, _T)
def hash_(x: Any) -> str | None:
    """The SHA-256 of x's text (UTF-8) as 64 lower-case hex digits; stable across runs and machines.

    hash("ann@example.com") -> "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"
    hash(null) -> null
    """
    if x is None:
        return None
    s = x if type(x) is str else text(x)
    return hashlib.sha256(s.encode("utf-8")).hexdigest()  # type: ignore[union-attr]


@_register("if", {"condition": _B, "then": _ANY, "else": _ANY}, CommonOf(1), null_propagating=False)
def if_(condition: bool | None, then: Any, otherwise: Any) -> Any:
    """then when the condition is true, else the third argument; a null condition counts as false.

    if(true, "a", "b") -> "a"
    if(false, "a", "b") -> "b"
    if(null, "a", "b") -> "b"
    """
    return then if condition is True else otherwise


# --------------------------------------------------------------------------------------------- special forms


@_register("label", {"choice": ValueType.CHOICE}, _T, special=True)
def _label(choice: Any) -> Any:  # pragma: no cover - special form, compiled by the compiler
    """The display label of a choice (option set) value, from the schema snapshot; a list for multi-select.

    The argument must be a choice field of the source table, not an expression. An unknown value
    rejects the record.
    """


@_register("link", {"field": ValueType.REFERENCE, "flow": _ANY}, ValueType.REFERENCE, special=True)
def _link(field: Any, flow: Any) -> Any:  # pragma: no cover - special form
    """The target record that another flow produced for a source lookup (a profile's PKey, an @odata.bind).

    The second argument is a flow name. While the other flow has not written the record yet, the
    record waits (deferred); after that it is rejected with the reason.
    """


@_register("contact", {"key": _T}, ValueType.REFERENCE, special=True)
def _contact(key: Any) -> Any:  # pragma: no cover - special form
    """The Dynamics 365 contact whose key the Campaign profile keeps (its externalId), as a lookup.

    Used by the email event flows to set regardingobjectid. Unresolved keys defer the record.
    """


# --------------------------------------------------------------------------------------------- wire formats

_SYSTEMS = ("d365", "campaign")


def to_wire(system: str, value_type: ValueType, value: Any) -> Any:
    """A value as the service expects it in JSON. Dates and datetimes are the only types that differ.

    d365: ``2024-01-31T10:00:00Z`` (whole seconds: Dataverse keeps no fractions) and ``2024-01-31``.
    campaign: ``2019-09-25 23:20:35.000Z`` (milliseconds) and ``2019-09-25``.
    """
    if system not in _SYSTEMS:
        raise FunctionError(f"unknown system {system!r}", function="to_wire")
    if value is None:
        return None
    if value_type is _DT:
        moment = value if type(value) is dt.datetime and value.tzinfo is UTC else datetime(value)
        plain = moment.replace(tzinfo=None)  # type: ignore[union-attr]
        # isoformat(timespec=...) truncates (never rounds) and runs in C: ~10x faster than strftime.
        if system == "d365":
            return plain.isoformat(timespec="seconds") + "Z"
        return plain.isoformat(sep=" ", timespec="milliseconds") + "Z"
    if value_type is _D:
        day = date(value)
        assert day is not None
        return day.isoformat()
    if value_type is ValueType.GUID and isinstance(value, uuid.UUID):
        return str(value)
    return value


def from_wire(system: str, value_type: ValueType, value: Any) -> Any:
    """A value read from a service's JSON as the mapping sees it: dates become ``date``, datetimes aware UTC."""
    if system not in _SYSTEMS:
        raise FunctionError(f"unknown system {system!r}", function="from_wire")
    if value is None:
        return None
    if value_type is _DT:
        return datetime(value)
    if value_type is _D:
        return date(value)
    return value


# --------------------------------------------------------------------------------------------- docs

_EXAMPLE = re.compile(r"^\s*(.+?\S)\s+->\s+(.+?)\s*$")


def examples(spec: FunctionSpec) -> tuple[tuple[str, str], ...]:
    """The ``call -> result`` example lines of a function's doc, as (call, result) pairs."""
    out = []
    for line in spec.doc.splitlines()[1:]:
        match = _EXAMPLE.match(line)
        if match and "(" in match.group(1):
            out.append((match.group(1), match.group(2)))
    return tuple(out)


def _prose(spec: FunctionSpec) -> str:
    lines = [line for line in spec.doc.splitlines()[1:] if not (_EXAMPLE.match(line) and "(" in line.split("->")[0])]
    return "\n".join(lines).strip()


def render_markdown() -> str:
    """``docs/functions.md``: a summary table, then one section per function with its examples."""
    out = [
        "# Function reference",
        "",
        "<!-- Generated from dsl/functions.py by `python -m mapsync.dsl.functions --markdown > docs/functions.md`.",
        "     Do not edit by hand: change the docstrings and regenerate (a test fails when they differ). -->",
        "",
        "Functions of the mapping language. **Null rule:** a null argument gives a null result, unless the",
        'table says otherwise. A function that cannot compute a value from a record\'s data (`number("abc")`)',
        "rejects that record: it goes to the dead-letter store with the field and the mapping line.",
        "Special forms are compiled from the schema and the other flows; their argument must be a field.",
        "",
        "| function | returns | null in, null out | |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(FUNCTIONS):
        spec = FUNCTIONS[name]
        params = ", ".join(spec.params) + (", ..." if spec.max_args is None else "")
        flag = "special form" if spec.special else ""
        null = "yes" if spec.null_propagating else "no"
        out.append(f"| [`{name}({params})`](#{name}) | {_describe_rule(spec)} | {null} | {flag} |")
    for name in sorted(FUNCTIONS):
        out += ["", f"## {name}", "", function_markdown(FUNCTIONS[name])]
    return "\n".join(out) + "\n"


def function_markdown(spec: FunctionSpec) -> str:
    """One function's section of ``docs/functions.md`` below its heading (the editor's hover shows it too)."""
    out = [f"`{spec.signature()}`", "", spec.summary]
    prose = _prose(spec)
    if prose:
        out += ["", prose]
    if not spec.null_propagating:
        out += ["", "Nulls do not propagate through this function."]
    pairs = examples(spec)
    if pairs:
        width = max(len(call) for call, _ in pairs)
        out += ["", "```"] + [f"{call.ljust(width)}  ->  {result}" for call, result in pairs] + ["```"]
    return "\n".join(out)


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["--markdown"]:
        print("usage: python -m mapsync.dsl.functions --markdown > docs/functions.md", file=sys.stderr)
        return 2
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
