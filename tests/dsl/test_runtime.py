"""Runtime helpers the generated code calls: wire date forms, replacement maps, outcome types."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import runtime as rt
from mapsync.dsl.functions import FunctionError

UTC = dt.UTC


def test_each_system_writes_its_own_datetime_form() -> None:
    moment = dt.datetime(2019, 9, 25, 23, 20, 35, 120_000, tzinfo=UTC)
    assert rt.d365_datetime(moment) == "2019-09-25T23:20:35Z"
    assert rt.campaign_datetime(moment) == "2019-09-25 23:20:35.120Z"
    assert rt.d365_date(moment) == "2019-09-25" and rt.campaign_date(dt.date(2024, 1, 31)) == "2024-01-31"
    paris = dt.datetime(2024, 1, 31, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert rt.d365_datetime(paris) == "2024-01-31T10:00:00Z"  # always UTC on the wire


@pytest.mark.parametrize(("wire", "expected"), [
    ("2024-01-31T10:00:00Z", dt.datetime(2024, 1, 31, 10, tzinfo=UTC)),
    ("2019-09-25 23:20:35.000Z", dt.datetime(2019, 9, 25, 23, 20, 35, tzinfo=UTC)),
    ("2024-01-31T10:00:00.1234567Z", dt.datetime(2024, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)),  # 7 digits
    ("2024-01-31T11:00:00+01:00", dt.datetime(2024, 1, 31, 10, tzinfo=UTC)),
    (None, None),
])
def test_read_datetime_accepts_both_services(wire: str | None, expected: dt.datetime | None) -> None:
    assert rt.read_datetime(wire) == expected


def test_bad_dates_raise_function_errors_not_crashes() -> None:
    for bad in ("yesterday", "2024-13-01", "31/01/2024"):
        with pytest.raises(FunctionError):
            rt.read_date(bad)
        with pytest.raises(FunctionError):
            rt.read_datetime(bad)
    with pytest.raises(FunctionError):
        rt.date_wire("2024-02-30")


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2999, 12, 31), timezones=st.just(UTC)))
def test_datetime_round_trips_through_both_wire_forms(moment: dt.datetime) -> None:
    assert rt.read_datetime(rt.d365_datetime(moment)) == moment.replace(microsecond=0)
    assert rt.read_datetime(rt.campaign_datetime(moment)) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert rt.date_wire(moment.date().isoformat()) == moment.date().isoformat()


def test_replace_map_misses_reject() -> None:
    cases = rt.ReplaceMap("methods", {1: "any"})
    assert cases[1] == "any"
    with pytest.raises(rt.UnmappedValue, match="value 9 is not mapped by replace methods"):
        cases[9]
    labels = rt.ReplaceMap("new_color", {1: "Red"}, "label")
    with pytest.raises(rt.RecordError, match="not an option of new_color"):
        labels[2]


def test_label_of_lists_and_text_of() -> None:
    assert rt.label_of({1: "A", 2: "B"}, "f", [2, 1]) == ["B", "A"]
    assert rt.label_of({1: "A"}, "f", None) is None
    with pytest.raises(rt.RecordError):
        rt.label_of({1: "A"}, "f", 3)
    assert (rt.text_of(None), rt.text_of("x"), rt.text_of(2.0), rt.text_of(True)) == ("", "x", "2", "true")


def test_rejected_names_flow_key_field_and_line() -> None:
    r = rt.Rejected("contacts", "k1", "too long", "email", "mappings/contacts.map", 14)
    assert str(r) == "flow contacts, record k1, field email (mappings/contacts.map:14): too long"
    assert r.location == "mappings/contacts.map:14"
    m = rt.Mapped("contacts", "k1", {"email": "a"})
    assert m.payload == {"email": "a"} and m.refs == () and m.keep == frozenset()
