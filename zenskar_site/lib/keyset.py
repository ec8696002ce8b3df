"""Keyset pagination for the dashboard's tables, newest first, with one cursor format.

A page starts after the last row of the previous one (a WHERE on the ordering columns, not an
OFFSET), so an old page never reads the pages before it, and no COUNT(*) runs: one extra row says
whether a next page exists. The cursor is the last row's ordering values joined by `~`: an id as
digits, a moment as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds: the pages' periods and ids are).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django import forms
from django.db.models import Q, QuerySet

Row = TypeVar("Row")
BIGINT_MAX = 2**63 - 1
_MOMENT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_PART_RE = {int: re.compile(r"^\d{1,19}\Z", re.ASCII), dt.datetime: re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")}


@dataclass(frozen=True)
class KeysetPage(Generic[Row]):
    rows: list[Row]
    next_cursor: str | None


def keyset_page(
    queryset: QuerySet[Any], *, order: tuple[str, ...], after: tuple[Any, ...] | None, limit: int
) -> KeysetPage[Any]:
    """One page of `queryset` by `order` (fields, all descending; the last one unique), after the cursor `after`."""
    if after is not None:
        # (a, b) < (x, y) as a disjunction the planner can match to the index: a < x OR (a = x AND b < y).
        condition = Q()
        for depth, name in enumerate(order):
            equal = dict(zip(order[:depth], after, strict=False))
            condition |= Q(**equal, **{f"{name}__lt": after[depth]})
        queryset = queryset.filter(condition)
    found = list(queryset.order_by(*(f"-{name}" for name in order))[: limit + 1])
    if len(found) <= limit:
        return KeysetPage(rows=found, next_cursor=None)
    last = found[limit - 1]
    return KeysetPage(rows=found[:limit], next_cursor=keyset_cursor(tuple(getattr(last, name) for name in order)))


def keyset_cursor(values: tuple[Any, ...]) -> str:
    return "~".join(
        f"{v.astimezone(dt.UTC):{_MOMENT_FORMAT}}" if isinstance(v, dt.datetime) else str(v) for v in values
    )


class KeysetCursorField(forms.CharField):
    """A page link's cursor, parsed into the ordering values (`kinds`: int or dt.datetime, in order)."""

    def __init__(self, *, kinds: tuple[type, ...], **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)
        self.kinds = kinds

    def clean(self, value: Any) -> tuple[Any, ...] | None:
        text = super().clean(value)
        if not text:
            return None
        parts = text.split("~")
        broken = forms.ValidationError("This page link is broken; start again from the newest rows.")
        if len(parts) != len(self.kinds) or not all(
            _PART_RE[k].match(p) for k, p in zip(self.kinds, parts, strict=True)
        ):
            raise broken
        try:
            values = tuple(
                int(part) if kind is int else dt.datetime.strptime(part, _MOMENT_FORMAT).replace(tzinfo=dt.UTC)
                for kind, part in zip(self.kinds, parts, strict=True)
            )
        except ValueError:  # a well-shaped but impossible moment (month 13)
            raise broken from None
        if any(isinstance(value, int) and value > BIGINT_MAX for value in values):
            raise broken
        return values
