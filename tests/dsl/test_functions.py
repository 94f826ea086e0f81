"""The function library: every docstring example runs, null rules hold, failures are FunctionErrors."""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import inspect
import re
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import functions as fn
from mapsync.dsl.errors import MapsyncError
from mapsync.dsl.functions import FUNCTIONS, FunctionError, examples, from_wire, to_wire
from mapsync.dsl.types import ValueType

UTC = dt.UTC
LANGUAGE_FUNCTIONS = [
    "lower", "upper", "trim", "title", "truncate", "replace_text", "substring", "split", "join", "concat",
    "coalesce", "number", "text", "date", "datetime", "now", "days", "contains", "startswith", "endswith",
    "matches", "email_valid", "hash", "if", "label", "link", "contact",
]  # fmt: skip
SPECIAL = {"label", "link", "contact"}


# ------------------------------------------------------------------------- docstring examples, executed

_DATE_LITERAL = re.compile(r"@(\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)")


def _literal(text: str) -> dt.date | dt.datetime:
    return fn.datetime(text) if "T" in text else fn.date(text)  # type: ignore[return-value]


def _evaluate(expr: str) -> Any:
    """Evaluate an example written in the mapping language's literal syntax (null, true, @2024-01-31)."""
    python = _DATE_LITERAL.sub(lambda m: f'_lit("{m.group(1)}")', expr)
    python = re.sub(r"\bif\(", "if_(", python)  # `if` is a Python keyword
    return _eval_node(ast.parse(python, mode="eval").body)


def _eval_node(node: ast.AST) -> Any:
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Name(id="null"):
            return None
        case ast.Name(id="true"):
            return True
        case ast.Name(id="false"):
            return False
        case ast.List(elts=items):
            return [_eval_node(i) for i in items]
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_eval_node(operand)
        case ast.BinOp(left=left, op=ast.Add(), right=right):
            return _eval_node(left) + _eval_node(right)
        case ast.BinOp(left=left, op=ast.Sub(), right=right):
            return _eval_node(left) - _eval_node(right)
        case ast.Call(func=ast.Name(id="_lit"), args=[ast.Constant(value=text)]):
            return _literal(text)
        case ast.Call(func=ast.Name(id=name), args=args):
            spec = FUNCTIONS["if" if name == "if_" else name]
            assert spec.impl is not None, f"{name} is a special form and cannot run in an example"
            return spec.impl(*(_eval_node(a) for a in args))
    raise AssertionError(f"unsupported example syntax: {ast.dump(node)}")


ALL_EXAMPLES = [(name, call, result) for name, spec in FUNCTIONS.items() for call, result in examples(spec)]


@pytest.mark.parametrize(("name", "call", "expected"), ALL_EXAMPLES, ids=[f"{n}: {c}" for n, c, _ in ALL_EXAMPLES])
def test_docstring_example(name: str, call: str, expected: str) -> None:
    if expected == "error":
        with pytest.raises(FunctionError) as info:
            _evaluate(call)
        assert info.value.function == name
        return
    actual, wanted = _evaluate(call), _evaluate(expected)
    assert actual == wanted
    assert type(actual) is type(wanted), f"{call} gave {actual!r} ({type(actual).__name__})"


# ------------------------------------------------------------------------- the registry


def test_every_language_function_is_registered() -> None:
    assert sorted(FUNCTIONS) == sorted(LANGUAGE_FUNCTIONS)


def test_special_forms_have_no_impl_and_others_do() -> None:
    for name, spec in FUNCTIONS.items():
        assert spec.special is (name in SPECIAL)
        assert (spec.impl is None) is spec.special
        assert spec.doc and spec.summary and not spec.summary.endswith(" ")


def test_every_regular_function_documents_examples() -> None:
    missing = [n for n, s in FUNCTIONS.items() if not s.special and n != "now" and not examples(s)]
    assert missing == []
    # each null-propagating function shows its null rule in an example
    no_null_example = [n for n, s in FUNCTIONS.items() if s.impl and s.null_propagating
                       and not any(r == "null" for _, r in examples(s))]
    assert no_null_example == []


def test_arity_matches_the_implementation() -> None:
    for spec in FUNCTIONS.values():
        assert len(spec.params) == len(spec.param_types) and spec.min_args <= len(spec.params)
        if spec.impl is None:
            continue
        parameters = inspect.signature(spec.impl).parameters.values()
        variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
        assert variadic is (spec.max_args is None), spec.name
        if not variadic:
            assert len(parameters) == spec.max_args, spec.name


def _sample_args(spec: fn.FunctionSpec) -> list[Any]:
    """Arguments of the first example that succeeds with no null argument."""
    for call, result in examples(spec):
        if result == "error" or not call.startswith(spec.name + "("):
            continue
        args = [_eval_node(a) for a in ast.parse(re.sub(r"\bif\(", "if_(", call), mode="eval").body.args]
        if all(a is not None for a in args):
            return args
    raise AssertionError(f"no usable example for {spec.name}")


@pytest.mark.parametrize("name", sorted(n for n, s in FUNCTIONS.items() if s.impl and s.null_propagating))
def test_null_in_any_position_gives_null(name: str) -> None:
    spec = FUNCTIONS[name]
    args = _sample_args(spec)
    assert spec.impl is not None and spec.impl(*args) is not None
    for i in range(len(args)):
        assert spec.impl(*args[:i], None, *args[i + 1 :]) is None, f"{name} with null argument {i}"


def test_result_type_rules() -> None:
    t, n, g, null = ValueType.TEXT, ValueType.NUMBER, ValueType.GUID, ValueType.NULL
    assert FUNCTIONS["coalesce"].result_type([null, t]) is t
    assert FUNCTIONS["coalesce"].result_type([g, t]) is t
    assert FUNCTIONS["coalesce"].result_type([n, t]) is ValueType.ANY
    assert FUNCTIONS["if"].result_type([ValueType.BOOLEAN, n, ValueType.CHOICE]) is n
    assert FUNCTIONS["lower"].result_type([t]) is t
    assert FUNCTIONS["days"].result_type([n]) is ValueType.DURATION
    assert FUNCTIONS["concat"].param_type(5) is ValueType.ANY
    assert FUNCTIONS["truncate"].signature() == "truncate(x: text, n: number) -> text"
    assert FUNCTIONS["concat"].signature() == "concat(x: any, ...) -> text"


# ------------------------------------------------------------------------- behaviour beyond the examples


def test_function_error_is_a_mapsync_error_with_a_clear_message() -> None:
    with pytest.raises(FunctionError) as info:
        fn.number("12abc")
    assert isinstance(info.value, MapsyncError)
    assert info.value.function == "number" and "'12abc'" in str(info.value)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (fn.lower, (5,)), (fn.upper, (True,)), (fn.trim, ([1],)), (fn.title, (3.5,)), (fn.truncate, (5, 2)),
        (fn.truncate, ("abc", 1.5)), (fn.truncate, ("abc", True)), (fn.truncate, ("abc", float("nan"))),
        (fn.replace_text, ("a", 1, "b")), (fn.substring, (1, 0, 1)), (fn.split, (1, ",")), (fn.join, ("ab", ",")),
        (fn.join, (["a"], 1)), (fn.number, ([1],)), (fn.number, ("nan",)), (fn.number, ("1_000",)),
        (fn.number, ("inf",)), (fn.text, ({"a": 1},)), (fn.date, (5,)), (fn.date, ("2024-13-01",)),
        (fn.datetime, ("2024-01-31T25:00:00Z",)), (fn.datetime, ("20240131",)), (fn.datetime, ("2024-W01-1",)),
        (fn.days, (True,)), (fn.days, (1e12,)), (fn.contains, (1, "a")), (fn.startswith, ("a", 1)),
        (fn.endswith, (2, "a")), (fn.matches, ("a", 1)), (fn.email_valid, (1,)),
    ],
)
def test_wrong_values_raise_function_error_never_a_raw_exception(call: Any, args: tuple[Any, ...]) -> None:
    with pytest.raises(FunctionError):
        call(*args)


def test_numbers() -> None:
    assert fn.number("-7") == -7 and type(fn.number("-7")) is int
    assert fn.number("2.50") == 2.5
    assert fn.number("1e20") == 1e20
    assert fn.number(False) == 0
    assert fn.text(1e20) == "100000000000000000000"
    assert fn.text(0.1 + 0.2) == "0.30000000000000004"
    assert fn.text(-0.0) == "0"


def test_dates_accept_both_services_forms() -> None:
    moment = dt.datetime(2024, 1, 31, 10, 0, tzinfo=UTC)
    assert fn.datetime("2024-01-31T10:00:00Z") == moment
    assert fn.datetime("2024-01-31T10:00:00.0000000Z") == moment
    assert fn.datetime("2024-01-31T10:00:00.1234567Z") == moment.replace(microsecond=123456)
    assert fn.datetime("2024-01-31T11:00:00+01:00") == moment
    assert fn.datetime("2024-01-31T10:00:00") == moment  # no offset: UTC
    assert fn.datetime("2024-01-31 10:00:00.000Z") == moment
    assert fn.datetime(" 2024-01-31T10:00:00Z ") == moment
    assert fn.datetime(dt.datetime(2024, 1, 31, 10)) == moment
    assert fn.datetime("2024-01-31T10:00:00Z").tzinfo is UTC  # type: ignore[union-attr]
    assert fn.date(moment) == dt.date(2024, 1, 31)
    assert fn.date(dt.datetime(2024, 1, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))) == dt.date(2024, 2, 1)
    assert fn.now().tzinfo is UTC
    assert fn.date("2024-01-31") + fn.days(1) == dt.date(2024, 2, 1)  # type: ignore[operator]
    assert moment - fn.days(0.5) == dt.datetime(2024, 1, 30, 22, 0, tzinfo=UTC)  # type: ignore[operator]


def test_wire_formats() -> None:
    moment = dt.datetime(2019, 9, 25, 23, 20, 35, 123456, tzinfo=UTC)
    assert to_wire("d365", ValueType.DATETIME, moment) == "2019-09-25T23:20:35Z"
    assert to_wire("campaign", ValueType.DATETIME, moment) == "2019-09-25 23:20:35.123Z"
    assert to_wire("d365", ValueType.DATE, dt.date(2019, 9, 25)) == "2019-09-25"
    assert to_wire("campaign", ValueType.DATE, "2019-09-25T10:00:00Z") == "2019-09-25"
    assert to_wire("campaign", ValueType.DATETIME, None) is None
    assert to_wire("d365", ValueType.TEXT, "x") == "x" and to_wire("d365", ValueType.NUMBER, 5) == 5
    assert from_wire("campaign", ValueType.DATETIME, "2019-09-25 23:20:35.000Z") == moment.replace(microsecond=0)
    assert from_wire("d365", ValueType.DATE, "2019-09-25") == dt.date(2019, 9, 25)
    assert from_wire("d365", ValueType.BOOLEAN, True) is True
    with pytest.raises(FunctionError, match="unknown system"):
        to_wire("salesforce", ValueType.TEXT, "x")
    with pytest.raises(FunctionError):
        from_wire("campaign", ValueType.DATETIME, "garbage")


def test_matches_compiles_each_pattern_once() -> None:
    fn._compile.cache_clear()
    for value in ("a1", "b2", "c3"):
        fn.matches(value, r"[0-9]$")
    info = fn._compile.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_title_and_email_edge_cases() -> None:
    assert fn.title("ÅSA-LENA ÖSTBERG") == "Åsa-Lena Östberg"
    assert fn.title("3rd avenue") == "3rd Avenue"
    assert fn.title("  ") == "  "
    assert fn.email_valid("a" * 64 + "@example.com") is True
    assert fn.email_valid("a" * 65 + "@example.com") is False
    assert fn.email_valid("ann@" + "b" * 250 + ".com") is False
    assert fn.email_valid("ann@.example.com") is False
    assert fn.email_valid("ann@example.com.") is False
    assert fn.email_valid("") is False
    assert fn.email_valid("first.last+tag@sub.example.co.uk") is True


# ------------------------------------------------------------------------- properties

_text = st.text(max_size=40)
_utc = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC))


@settings(max_examples=200)
@given(_text, st.integers(0, 50))
def test_truncate_is_a_prefix_no_longer_than_n(x: str, n: int) -> None:
    out = fn.truncate(x, n)
    assert out is not None and len(out) <= n and x.startswith(out)
    assert len(out) == min(n, len(x))


@settings(max_examples=200)
@given(_text)
def test_case_functions_are_idempotent(x: str) -> None:
    assert fn.lower(fn.lower(x)) == fn.lower(x)
    assert fn.upper(fn.upper(x)) == fn.upper(x)
    assert fn.trim(fn.trim(x)) == fn.trim(x)
    assert len(fn.title(x) or "") >= len(x)  # never loses characters


@settings(max_examples=200)
@given(_utc)
def test_datetimes_round_trip_through_both_wire_formats(moment: dt.datetime) -> None:
    d365 = from_wire("d365", ValueType.DATETIME, to_wire("d365", ValueType.DATETIME, moment))
    assert d365 == moment.replace(microsecond=0)
    campaign = from_wire("campaign", ValueType.DATETIME, to_wire("campaign", ValueType.DATETIME, moment))
    assert campaign == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert fn.datetime(fn.text(moment)) == moment


@settings(max_examples=200)
@given(st.dates(min_value=dt.date(1, 1, 1)), st.sampled_from(["d365", "campaign"]))
def test_dates_round_trip(day: dt.date, system: str) -> None:
    assert from_wire(system, ValueType.DATE, to_wire(system, ValueType.DATE, day)) == day
    assert fn.date(fn.text(day)) == day


@settings(max_examples=200)
@given(st.one_of(st.integers(-(10**15), 10**15), st.floats(allow_nan=False, allow_infinity=False)))
def test_number_reads_what_text_writes(value: float) -> None:
    assert fn.number(fn.text(value)) == value


@settings(max_examples=200)
@given(_text, st.text(alphabet=string.punctuation, min_size=1, max_size=3))
def test_join_undoes_split(x: str, sep: str) -> None:
    assert fn.join(fn.split(x, sep), sep) == x


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_parsers_and_checks_fail_only_with_function_error(x: str) -> None:
    for call in (fn.date, fn.datetime, fn.number, fn.email_valid):
        with contextlib.suppress(FunctionError):
            call(x)
    digest = fn.hash_(x)
    assert digest == fn.hash_(x) and re.fullmatch(r"[0-9a-f]{64}", digest or "")


@settings(max_examples=200)
@given(st.lists(st.one_of(st.none(), _text, st.integers()), max_size=5))
def test_concat_treats_null_as_empty(parts: list[Any]) -> None:
    assert fn.concat(*parts) == "".join("" if p is None else str(p) for p in parts)
    assert fn.coalesce(*parts, "z") == next((p for p in parts if p is not None), "z")
