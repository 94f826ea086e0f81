"""The logical value types the checker and compiler reason with.

A snapshot field has a *wire* type (``string``, ``money``, ``choice``, ``lookup`` ... see
``schemas/snapshot.schema.json``); the mapping language only cares about a dozen *logical* types.
``value_type_for`` maps the first onto the second, ``assignable``/``comparable`` say what may meet.

The rules are deliberately strict where data would silently change meaning (a number never becomes
text without ``text()``, a datetime never becomes a date without ``date()``) and lenient where the
value is the same thing seen two ways (a GUID *is* text; a choice *is* a number with labels).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum

__all__ = [
    "SNAPSHOT_TYPES",
    "ValueType",
    "arithmetic",
    "assignable",
    "common_type",
    "comparable",
    "type_of",
    "value_type_for",
]


class ValueType(enum.Enum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    GUID = "guid"
    CHOICE = "choice"  # a number with options (Dataverse option set)
    LIST = "list"  # multi-select choices, split() results
    RECORD = "record"  # an object field: Campaign location, event payload parts
    REFERENCE = "reference"  # a lookup / link to another record
    DURATION = "duration"  # days(n): added to or subtracted from dates and datetimes
    ANY = "any"  # unknown at check time (e.g. a function whose result depends on data)
    NULL = "null"  # the literal null

    def __str__(self) -> str:
        return self.value


# Snapshot (wire) type -> logical type. Every type the snapshot JSON Schema allows must be here.
SNAPSHOT_TYPES: dict[str, ValueType] = {
    "string": ValueType.TEXT,
    "memo": ValueType.TEXT,
    "enum": ValueType.TEXT,  # Campaign string enums: text restricted to `values`
    "integer": ValueType.NUMBER,
    "bigint": ValueType.NUMBER,
    "decimal": ValueType.NUMBER,
    "double": ValueType.NUMBER,
    "money": ValueType.NUMBER,
    "boolean": ValueType.BOOLEAN,
    "datetime": ValueType.DATETIME,
    "date": ValueType.DATE,
    "guid": ValueType.GUID,
    "choice": ValueType.CHOICE,
    "multichoice": ValueType.LIST,
    "lookup": ValueType.REFERENCE,
    "object": ValueType.RECORD,
}


def value_type_for(snapshot_type: str) -> ValueType:
    """The logical type of a snapshot field type; unknown names raise ``KeyError`` (a bug, not user input)."""
    return SNAPSHOT_TYPES[snapshot_type]


_T, _N, _G, _C, _R = ValueType.TEXT, ValueType.NUMBER, ValueType.GUID, ValueType.CHOICE, ValueType.REFERENCE

# (source, target) pairs that are assignable although the types differ. Why each one is safe:
_WIDENINGS: frozenset[tuple[ValueType, ValueType]] = frozenset(
    {
        (_G, _T),  # a GUID is its canonical text
        (_C, _N),  # a choice value is its option number
        (_N, _C),  # a number into a choice column; the checker warns about values outside the options
        (ValueType.DATE, ValueType.DATETIME),  # midnight UTC of that day
        (_R, _G),  # a source lookup reads as the referenced record's id
        (_R, _T),
        (_G, _R),  # an id into a lookup with a single target table
    }
)


def assignable(source: ValueType, target: ValueType) -> bool:
    """May a value of type ``source`` be written into a field of type ``target`` without a conversion?

    ``null`` is assignable anywhere (it clears the field); ``any`` is trusted both ways and checked at
    run time. A number is *not* assignable to text: the mapping must say ``text(x)``.
    """
    if source is target or source is ValueType.NULL or ValueType.ANY in (source, target):
        return True
    return (source, target) in _WIDENINGS


# Groups of types whose values can be compared with == / < and friends.
_COMPARABLE_GROUPS: tuple[frozenset[ValueType], ...] = (
    frozenset({_N, _C}),
    frozenset({_T, _G, _R}),
    frozenset({ValueType.DATE, ValueType.DATETIME}),
)


def comparable(a: ValueType, b: ValueType) -> bool:
    """May ``a`` and ``b`` meet in a comparison? ``null``/``any`` compare with everything."""
    if a is b or ValueType.NULL in (a, b) or ValueType.ANY in (a, b):
        return True
    return any(a in group and b in group for group in _COMPARABLE_GROUPS)


def common_type(a: ValueType, b: ValueType) -> ValueType:
    """The type of ``a ?? b`` or ``if(c, a, b)``: the wider of the two, or ``any`` when they do not meet."""
    if a is b or b is ValueType.NULL:
        return a
    if a is ValueType.NULL:
        return b
    if ValueType.ANY in (a, b):
        return ValueType.ANY
    pair = {a, b}
    if pair == {_N, _C}:
        return _N
    if pair <= {_T, _G, _R}:
        return _T
    if pair == {ValueType.DATE, ValueType.DATETIME}:
        return ValueType.DATETIME
    return ValueType.ANY


_D, _DT, _DUR = ValueType.DATE, ValueType.DATETIME, ValueType.DURATION
_ARITHMETIC: dict[tuple[str, ValueType, ValueType], ValueType] = {
    **{(op, _N, _N): _N for op in "+-*/"},
    ("+", _D, _DUR): _D,
    ("-", _D, _DUR): _D,
    ("+", _DUR, _D): _D,
    ("+", _DT, _DUR): _DT,
    ("-", _DT, _DUR): _DT,
    ("+", _DUR, _DT): _DT,
    ("-", _D, _D): _DUR,
    ("-", _DT, _DT): _DUR,
    ("+", _DUR, _DUR): _DUR,
    ("-", _DUR, _DUR): _DUR,
    ("*", _DUR, _N): _DUR,
    ("*", _N, _DUR): _DUR,
    ("/", _DUR, _N): _DUR,
}


def arithmetic(op: str, left: ValueType, right: ValueType) -> ValueType | None:
    """The result type of ``left op right`` for ``+ - * /``, or None when the operands do not fit.

    Choices count as numbers; ``null`` or ``any`` on either side gives ``any`` (checked at run time).
    """
    if ValueType.NULL in (left, right) or ValueType.ANY in (left, right):
        return ValueType.ANY
    left = _N if left is _C else left
    right = _N if right is _C else right
    return _ARITHMETIC.get((op, left, right))


def type_of(value: object) -> ValueType:
    """The logical type of a run-time value (literals, test inputs). ``bool`` is checked before ``int``."""
    if value is None:
        return ValueType.NULL
    if isinstance(value, bool):
        return ValueType.BOOLEAN
    if isinstance(value, int | float | decimal.Decimal):
        return ValueType.NUMBER
    if isinstance(value, str):
        return ValueType.TEXT
    # datetime is a subclass of date: test it first.
    if isinstance(value, dt.datetime):
        return ValueType.DATETIME
    if isinstance(value, dt.date):
        return ValueType.DATE
    if isinstance(value, dt.timedelta):
        return ValueType.DURATION
    if isinstance(value, list | tuple):
        return ValueType.LIST
    if isinstance(value, dict):
        return ValueType.RECORD
    return ValueType.ANY
