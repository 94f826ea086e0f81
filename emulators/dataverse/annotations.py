"""Instance annotations a client asks for with ``Prefer: odata.include-annotations="..."``.

Documented (Microsoft, "Select columns using OData" and "Request annotations"): the preference names a
comma-separated list of annotation terms, ``*`` for all, or a namespace with ``.*``; each annotation is
written just before the property it is about (``<property>@<term>``), and the reply echoes the preference in
``Preference-Applied``. Formatted values (``OData.Community.Display.V1.FormattedValue``) are the labels of
choice, yes/no, state and status columns, the primary name of the row a lookup points at, money with its
currency symbol and dates in the user's time zone.

Assumed, since the emulated org has no user settings: the user reads en-US with the time zone UTC and the
org's base currency is the US dollar; yes/no columns have the labels "Yes" and "No" (the snapshots carry no
boolean labels); whole and decimal numbers are formatted with thousands separators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from mapsync.emulators.dataverse.metadata import ColumnDef

__all__ = ["ASSOCIATED_NAVIGATION", "FORMATTED_VALUE", "LOOKUP_LOGICAL_NAME", "AnnotationFilter", "formatted_value"]

FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
ASSOCIATED_NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"


@dataclass(frozen=True, slots=True)
class AnnotationFilter:
    """The terms an ``odata.include-annotations`` preference asks for (OData 4.0 §8.2.8.4 patterns)."""

    text: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AnnotationFilter:
        include, exclude = [], []
        for item in (part.strip() for part in text.split(",")):
            if item.startswith("-"):
                exclude.append(item[1:])
            elif item:
                include.append(item)
        return cls(text, tuple(include), tuple(exclude))

    def wants(self, term: str) -> bool:
        return any(_matches(p, term) for p in self.include) and not any(_matches(p, term) for p in self.exclude)

    @property
    def applied(self) -> str:
        """The ``Preference-Applied`` value, echoing the preference as sent."""
        return f'odata.include-annotations="{self.text}"'


def _matches(pattern: str, term: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return term.startswith(pattern[:-1])
    return pattern == term


def formatted_value(col: ColumnDef, value: Any) -> str | None:
    """The formatted value of a non-lookup column, or None when Dataverse gives none (text, ids, nulls)."""
    if value is None:
        return None
    kind = col.type
    if kind == "choice":
        return dict(col.options).get(int(value), str(value))
    if kind == "multichoice":
        labels = dict(col.options)
        return "; ".join(labels.get(int(v), v) for v in str(value).split(",") if v)
    if kind == "boolean":
        return "Yes" if value else "No"
    if kind == "money":
        amount = float(value)
        return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"
    if kind == "integer":
        return f"{int(value):,}"
    if kind in ("decimal", "double"):
        return f"{float(value):,.{col.precision if col.precision is not None else 2}f}"
    if kind == "date":
        d = date.fromisoformat(str(value)[:10])
        return f"{d.month}/{d.day}/{d.year}"
    if kind == "datetime":
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        hour = t.hour % 12 or 12
        return f"{t.month}/{t.day}/{t.year} {hour}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"
    return None
