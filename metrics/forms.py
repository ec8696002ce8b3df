"""Dashboard forms for billable metrics: the builder / SQL definition, the preview window, the values filters."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms

from metrics.engine.builder import GROUPABLE_TYPES
from metrics.models import Aggregation, MetricKind
from usage.models import Period, UsageEvent
from usage.schema import NUMERIC_TYPES, type_parse
from zenskar_site.lib.forms import UtcDateTimeField
from zenskar_site.lib.keyset import KeysetCursorField

INTEGER_RE = re.compile(r"^[+-]?\d+\Z", re.ASCII)


@dataclass(frozen=True)
class SchemaField:
    name: str
    type: str
    base: str

    @property
    def numeric(self) -> bool:
        return self.base in NUMERIC_TYPES

    @property
    def groupable(self) -> bool:
        return self.base in GROUPABLE_TYPES


def schema_fields(usage_event: UsageEvent) -> list[SchemaField]:
    return [
        SchemaField(name=name, type=text, base=type_parse(text).base)
        for name, text in usage_event.dataschema.get("data", {}).items()
    ]


def filter_value_typed(text: Any, base: str | None) -> Any:
    """A filter value typed in a text box, as the JSON value the field's type expects.

    Text that does not read as the type is passed on unchanged, so the service names the problem.
    """
    if not isinstance(text, str):
        return text
    value = text.strip()
    if base == "Int64" and INTEGER_RE.match(value):
        return int(value)
    if base in ("Float64", "Decimal"):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return text
        return number if number.is_finite() else text
    if base == "Bool" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return text


def sql_example(usage_events: list[UsageEvent], schemas: dict[str, list[SchemaField]]) -> str:
    """A query over the organisation's first usage event with a numeric field, to start from."""
    for event in usage_events:
        numeric = next((f.name for f in schemas[event.api_slug] if f.numeric), None)
        if numeric is not None:
            return (
                f"SELECT customer_id, SUM({numeric}) AS quantity\n"
                f"FROM {event.api_slug}\n"
                "WHERE timestamp >= {{ period_start }} AND timestamp < {{ period_end }}\n"
                "GROUP BY customer_id"
            )
    return "SELECT customer_id, COUNT(*) AS quantity FROM <usage event slug> GROUP BY customer_id"


class FieldNamesField(forms.MultipleChoiceField):
    """Data field names; which ones exist depends on the chosen usage event, so the service checks them."""

    def valid_value(self, value: Any) -> bool:
        return isinstance(value, str)


class MetricForm(forms.Form):
    # Name and slug are checked by the service, so one round trip reports them with the definition's errors.
    name = forms.CharField(label="Name", max_length=200, required=False)
    slug = forms.CharField(
        label="Slug",
        max_length=64,
        required=False,
        help_text="Lowercase letters, digits, _ and -. Derived from the name; you can edit it.",
    )
    kind = forms.ChoiceField(
        label="Definition", choices=MetricKind.choices, initial=MetricKind.BUILDER, widget=forms.RadioSelect
    )
    usage_event = forms.ChoiceField(label="Usage event", required=False)
    aggregation = forms.ChoiceField(
        label="Aggregation", choices=Aggregation.choices, initial=Aggregation.SUM, required=False
    )
    field = forms.CharField(label="Field", required=False, widget=forms.Select)
    # The filter rows, as JSON [{field, op, value}] with text values; the page's script keeps it in step.
    filters = forms.CharField(widget=forms.HiddenInput, required=False)
    group_by = FieldNamesField(label="Group by", required=False, widget=forms.CheckboxSelectMultiple)
    sql = forms.CharField(
        label="SQL",
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "class": "sql-editor", "spellcheck": "false", "wrap": "off"}),
    )
    granularity = forms.ChoiceField(label="Granularity", choices=Period.choices, initial=Period.DAY)

    def __init__(self, *args: Any, usage_events: list[UsageEvent], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schemas = {event.api_slug: schema_fields(event) for event in usage_events}
        self.fields["usage_event"].choices = [("", "Choose a usage event…")] + [  # type: ignore[attr-defined]
            (event.api_slug, f"{event.name} ({event.api_slug})") for event in usage_events
        ]
        self.fields["sql"].widget.attrs["placeholder"] = sql_example(usage_events, self.schemas)
        chosen = self["usage_event"].value() or ""
        self.fields["field"].widget.choices = [("", "—")] + [
            (f.name, f"{f.name} ({f.type})") for f in self.schemas.get(chosen, [])
        ]

    def clean_filters(self) -> list[dict[str, Any]]:
        text = self.cleaned_data.get("filters") or "[]"
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            raise forms.ValidationError("The filters are not valid JSON.") from None
        if not isinstance(rows, list) or not all(
            isinstance(row, dict) and isinstance(row.get("field"), str) and isinstance(row.get("op"), str)
            for row in rows
        ):
            raise forms.ValidationError("The filters are a list of {field, op, value} objects.")
        return rows

    def filter_rows(self) -> list[dict[str, Any]]:
        """The filter rows as typed, for redrawing them after a round trip."""
        if self.is_bound and "filters" in getattr(self, "cleaned_data", {}):
            return list(self.cleaned_data["filters"])
        try:
            rows = json.loads(self["filters"].value() or "[]")
        except json.JSONDecodeError:
            return []
        return rows if isinstance(rows, list) else []

    def body(self) -> dict[str, Any]:
        """The definition in the shape `metric_create` and `metric_definition_validate` take."""
        data = self.cleaned_data
        body: dict[str, Any] = {
            "name": data.get("name", ""),
            "slug": data.get("slug", ""),
            "kind": data["kind"],
            "granularity": data["granularity"],
        }
        if data["kind"] == MetricKind.SQL:
            body["sql"] = data["sql"]
            return body
        bases = {f.name: f.base for f in self.schemas.get(data["usage_event"], [])}
        filters = []
        for row in data["filters"]:
            op, field = row.get("op"), row.get("field")
            condition: dict[str, Any] = {"field": field, "op": op}
            if op not in ("is_null", "is_not_null"):
                base = bases.get(field) if isinstance(field, str) else None
                value = row.get("value", "")
                if op in ("in", "not_in") and isinstance(value, str):
                    parts = [part.strip() for part in value.split(",")]
                    condition["value"] = [filter_value_typed(part, base) for part in parts if part]
                else:
                    condition["value"] = filter_value_typed(value, base)
            filters.append(condition)
        body.update(
            usage_event=data["usage_event"],
            aggregation=data["aggregation"],
            field=data["field"],
            filters=filters,
            group_by=list(data["group_by"]),
        )
        return body


def default_preview_window(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The last 7 days, whole UTC days, today included."""
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=6), today + dt.timedelta(days=1)


def _minutes_input() -> forms.DateTimeInput:
    return forms.DateTimeInput(attrs={"type": "datetime-local", "step": "60"}, format="%Y-%m-%dT%H:%M")


class PreviewWindowForm(forms.Form):
    prefix = "preview"

    start = UtcDateTimeField(label="From (UTC)", widget=_minutes_input())
    end = UtcDateTimeField(label="To (UTC)", widget=_minutes_input())

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start is not None and end is not None and start >= end:
            self.add_error("end", "“To” must be later than “From”.")
        return cleaned


class ValueFilterForm(forms.Form):
    customer_id = forms.CharField(label="Customer ID", max_length=255, required=False)
    start = UtcDateTimeField(label="From (UTC)", required=False)
    end = UtcDateTimeField(label="To (UTC)", required=False)
    cursor = KeysetCursorField(kinds=(dt.datetime, int))  # "<period start>~<value id>" of the last row shown

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start is not None and end is not None and start >= end:
            self.add_error("end", "“To” must be later than “From”.")
        return cleaned


class OverrideForm(forms.Form):
    action = forms.ChoiceField(choices=[("set", "Set"), ("clear", "Clear")], initial="set")
    override_value = forms.CharField(label="Override value", max_length=64, required=False)
    reason = forms.CharField(label="Reason", max_length=2000, required=False)


FILTER_OP_LABELS = {
    "eq": "=",
    "neq": "≠",
    "in": "in",
    "not_in": "not in",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "is_null": "is empty",
    "is_not_null": "is set",
}
