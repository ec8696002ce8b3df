"""Dashboard pages for Usage > Billable metrics: the list, the builder / SQL editor with preview, a metric's page."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from metrics.api import preview_body, preview_deadline, render_times
from metrics.definitions import metric_create, metric_definition_validate
from metrics.engine.builder import FILTER_OPS, NUMERIC_AGGREGATIONS, decimal_text, dimension_text, to_decimal
from metrics.exports import metric_values_download
from metrics.forms import (
    FILTER_OP_LABELS,
    MetricForm,
    OverrideForm,
    PreviewWindowForm,
    ValueFilterForm,
    default_preview_window,
)
from metrics.models import BillableMetric, MetricKind, MetricValue, RecomputeState
from metrics.selectors import (
    Window,
    metric_audit_entries,
    metric_get,
    metric_window_values,
    metrics_list,
    window_choose,
)
from metrics.services import metric_value_override
from usage.models import Period, UsageEvent
from usage.selectors import usage_events_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import member_view
from zenskar_site.lib.charts import BarChart, ChartPoint, bar_chart
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.pages import not_found_page
from zenskar_site.lib.periods import period_next

# Where each error path of the metric services lands on the form; filter rows are handled apart.
FORM_FIELDS = frozenset(
    {"name", "slug", "kind", "granularity", "usage_event", "aggregation", "field", "group_by", "sql"}
)
PREVIEW_ROWS_SHOWN = 200


# --- the list ---


@member_view()
def metric_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    return render(request, "metrics/metric_list.html", {"metrics": metrics_list(organisation=actor.organisation)})


# --- the builder / SQL editor ---


@dataclass(frozen=True)
class SplitErrors:
    form: dict[str, list[str]]
    filter_rows: dict[int, list[str]]


def errors_split(exc: ValidationFailed) -> SplitErrors:
    """A service's error paths, as form-field errors and errors of filter rows (`filters[2].value`)."""
    form: dict[str, list[str]] = {}
    rows: dict[int, list[str]] = {}
    for path, found in exc.errors.items():
        if path.startswith("filters[") and "]" in path:
            index_text, _, rest = path.removeprefix("filters[").partition("]")
            if index_text.isdigit():
                part = rest.removeprefix(".")
                rows.setdefault(int(index_text), []).extend(f"{part}: {m}" if part else m for m in found)
                continue
        if path == "filters":
            form.setdefault("filters", []).extend(found)
        elif path in ("start", "end"):
            form.setdefault(f"preview_{path}", []).extend(found)
        elif path.startswith("sql"):  # the sandbox may point into the query: sql, sql.line, ...
            form.setdefault("sql", []).extend(found)
        else:
            form.setdefault(path if path in FORM_FIELDS else "__all__", []).extend(found)
    return SplitErrors(form=form, filter_rows=rows)


def _active_usage_events(actor: Actor) -> list[UsageEvent]:
    return list(usage_events_list(organisation=actor.organisation))


def _form_context(form: MetricForm, window: PreviewWindowForm, usage_events: list[UsageEvent]) -> dict[str, Any]:
    schemas = {
        slug: [{"name": f.name, "type": f.type, "numeric": f.numeric, "groupable": f.groupable} for f in schema_fields]
        for slug, schema_fields in form.schemas.items()
    }
    state = {
        "usage_event": form["usage_event"].value() or "",
        "field": form["field"].value() or "",
        "group_by": list(form["group_by"].value() or []),
        "filters": form.filter_rows(),
    }
    return {
        "form": form,
        "window": window,
        "usage_events": usage_events,
        "tables": [(event, form.schemas[event.api_slug]) for event in usage_events],
        "builder": {
            "schemas": schemas,
            "state": state,
            "ops": [[op, FILTER_OP_LABELS[op]] for op in FILTER_OPS],
            "numeric_aggregations": sorted(NUMERIC_AGGREGATIONS),
        },
    }


@member_view(write=True)
def metric_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    if not actor.can_write:
        raise PermissionDenied("Only admins of the organisation can add billable metrics.")
    usage_events = _active_usage_events(actor)
    form = MetricForm(request.POST or None, usage_events=usage_events)
    start, end = default_preview_window(timezone.now())
    window = PreviewWindowForm(initial={"start": start, "end": end})
    filter_errors: dict[int, list[str]] = {}
    if request.method == "POST" and form.is_valid():
        try:
            metric = metric_create(actor=actor, body=form.body())
        except ValidationFailed as exc:
            split = errors_split(exc)
            filter_errors = split.filter_rows
            for name, found in split.form.items():
                for message in found:
                    form.add_error(name if name in form.fields else None, message)
            if filter_errors:
                form.add_error("filters", "A filter is not right: see the rows marked below.")
        else:
            messages.success(request, f"Billable metric “{metric.name}” saved. Its values are being computed.")
            return redirect("metrics:metric-detail", slug=metric.slug)
    context = _form_context(form, window, usage_events)
    context["filter_errors"] = {str(index): found for index, found in filter_errors.items()}
    return render(request, "metrics/metric_form.html", context)


@require_POST
@member_view(write=True)
def metric_preview(request: HttpRequest, actor: Actor) -> JsonResponse:
    """The values an unsaved definition gives over a window, computed from raw records; nothing is stored."""
    deadline = preview_deadline()
    form = MetricForm(request.POST, usage_events=_active_usage_events(actor))
    window = PreviewWindowForm(request.POST)
    errors: dict[str, list[str]] = {}
    if not form.is_valid():
        errors.update({name: [str(m) for m in found] for name, found in form.errors.items()})
    if not window.is_valid():
        errors.update({f"preview_{name}": [str(m) for m in found] for name, found in window.errors.items()})
    if errors:
        return JsonResponse({"errors": errors, "filter_errors": {}}, status=400)
    try:
        clean = metric_definition_validate(organisation_id=actor.organisation.id, body=form.body())
        clean.pop("sources")
        metric = BillableMetric(organisation=actor.organisation, name="preview", slug="preview", **clean)
        body = preview_body(metric, window.cleaned_data["start"], window.cleaned_data["end"], deadline=deadline)
    except ValidationFailed as exc:
        split = errors_split(exc)
        return JsonResponse(
            {"errors": split.form, "filter_errors": {str(i): found for i, found in split.filter_rows.items()}},
            status=400,
        )
    values = body["values"]
    body["count"] = len(values)
    body["values"] = values[:PREVIEW_ROWS_SHOWN]
    body["granularity"] = metric.granularity
    return JsonResponse(render_times(body))


# --- a metric's page ---


# The chart (zenskar_site.lib.charts lays it out, the shared template draws it).
X_LABELS = 10


def _period_label(moment: dt.datetime, granularity: str) -> str:
    if granularity == Period.HOUR:
        return f"{moment:%b} {moment.day} {moment:%H:%M}"
    if granularity == Period.DAY:
        return f"{moment:%b} {moment.day}"
    return f"{moment:%b %Y}"


def _period_title(moment: dt.datetime, granularity: str, amount: Decimal | None) -> str:
    shown = "no values" if amount is None else decimal_text(amount)
    if granularity == Period.HOUR:
        return f"{moment:%Y-%m-%d %H:%M} to {period_next(moment, granularity):%H:%M} UTC: {shown}"
    if granularity == Period.DAY:
        return f"{moment:%Y-%m-%d} UTC: {shown}"
    return f"{moment:%B %Y} UTC: {shown}"


def metric_chart(*, periods: list[dt.datetime], totals: dict[dt.datetime, Decimal], granularity: str) -> BarChart:
    every = max(1, math.ceil(len(periods) / X_LABELS))
    points = []
    for index, moment in enumerate(periods):
        amount = totals.get(moment)
        points.append(
            ChartPoint(
                amount=amount,
                text=(decimal_text(amount) or "") if amount is not None else "",
                title=_period_title(moment, granularity, amount),
                label=_period_label(moment, granularity) if (len(periods) - 1 - index) % every == 0 else None,
            )
        )
    known = [amount for amount in (totals.get(moment) for moment in periods) if amount is not None]
    return bar_chart(points=points, total=decimal_text(sum(known, Decimal(0))) or "0")


def dimension_label(dimension: Any) -> str:
    if not isinstance(dimension, dict) or not dimension:
        return ""
    # Stored dimension values are already text (or null): dimension_text leaves text as it is.
    parts = (f"{key}: {'—' if value is None else dimension_text(value)}" for key, value in sorted(dimension.items()))
    return ", ".join(parts)


@dataclass(frozen=True)
class CustomerTotal:
    customer_id: str
    dimension: str
    total: str


@dataclass(frozen=True)
class ValueRow:
    value: MetricValue
    dimension: str


@dataclass(frozen=True)
class ValuesShown:
    chart: BarChart
    totals: list[CustomerTotal]
    more_totals: bool
    rows: list[ValueRow]
    next_cursor: str | None
    grouped: bool


def values_shown(
    *, metric: BillableMetric, window: Window, customer_id: str | None, cursor: tuple[dt.datetime, int] | None
) -> ValuesShown:
    """The chart, the totals per customer and one page of the values table, all over one window."""
    found = metric_window_values(metric=metric, window=window, customer_id=customer_id, cursor=cursor)
    return ValuesShown(
        chart=metric_chart(periods=window.periods, totals=found.period_totals, granularity=metric.granularity),
        totals=[
            CustomerTotal(
                customer_id=row["customer_id"],
                dimension=dimension_label(row["dimension"]),
                total=decimal_text(to_decimal(row["total"])) or "—",
            )
            for row in found.customer_totals
        ],
        more_totals=found.more_totals,
        rows=[ValueRow(value=v, dimension=dimension_label(v.dimension)) for v in found.values],
        next_cursor=found.next_cursor,
        grouped=found.grouped,
    )


def _filter_summary(metric: BillableMetric) -> list[str]:
    lines = []
    for condition in metric.filters:
        op = condition.get("op", "")
        label = FILTER_OP_LABELS.get(op, op)
        if op in ("is_null", "is_not_null"):
            lines.append(f"{condition.get('field')} {label}")
        else:
            value = condition.get("value")
            # str(): validated filters hold no None; if one did, it would still read "None".
            shown = ", ".join(str(dimension_text(v)) for v in (value if isinstance(value, list) else [value]))
            lines.append(f"{condition.get('field')} {label} {shown}")
    return lines


@member_view()
def metric_detail(request: HttpRequest, actor: Actor, slug: str) -> HttpResponse:
    try:
        metric = metric_get(organisation=actor.organisation, slug=slug)
    except NotFound as exc:
        return not_found_page(request, exc)
    filters = ValueFilterForm(request.GET)
    valid = filters.is_valid()
    window: Window | None = None
    if valid:
        window, too_long = window_choose(
            metric=metric, start=filters.cleaned_data["start"], end=filters.cleaned_data["end"], now=timezone.now()
        )
        if too_long:
            filters.add_error("end", too_long)
            valid = False
    shown = None
    if valid and window is not None:
        shown = values_shown(
            metric=metric,
            window=window,
            customer_id=filters.cleaned_data["customer_id"] or None,
            cursor=filters.cleaned_data["cursor"],
        )
    running = metric.recompute_state == RecomputeState.RUNNING
    return render(
        request,
        "metrics/metric_detail.html",
        {
            "metric": metric,
            "audit": metric_audit_entries(metric=metric),
            "is_sql": metric.kind == MetricKind.SQL,
            "filter_lines": _filter_summary(metric),
            "sources": list(metric.sources.order_by("api_slug")),
            "running": running,
            "progress_percent": (
                round(100 * metric.recompute_done / metric.recompute_total) if metric.recompute_total else None
            ),
            "filters": filters,
            "filtered": valid and any(filters.cleaned_data[name] for name in ("customer_id", "start", "end")),
            "window": window,
            "shown": shown,
            "chart": shown.chart if shown else None,
            "rows": shown.rows if shown else [],
            "paged": valid and filters.cleaned_data["cursor"] is not None,
        },
    )


@require_POST
@member_view(write=True)
def metric_value_override_view(request: HttpRequest, actor: Actor, slug: str, value_id: int) -> HttpResponse:
    form = OverrideForm(request.POST)
    detail_url = reverse("metrics:metric-detail", kwargs={"slug": slug})
    back = request.POST.get("next", "")
    if not (back.startswith(detail_url) and url_has_allowed_host_and_scheme(back, allowed_hosts=None)):
        back = detail_url
    if not form.is_valid():
        for name, problems in form.errors.items():
            messages.error(request, f"{name}: {' '.join(str(p) for p in problems)}")
        return redirect(back)
    clear = form.cleaned_data["action"] == "clear"
    try:
        value = metric_value_override(
            actor=actor,
            metric_slug=slug,
            value_id=value_id,
            override_value=None if clear else form.cleaned_data["override_value"],
            reason=form.cleaned_data["reason"],
        )
    except NotFound as exc:
        return not_found_page(request, exc)
    except ValidationFailed as exc:
        for found in exc.errors.values():
            for message in found:
                messages.error(request, f"Override not saved: {message}")
    else:
        when = f"{value.period_start.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
        if clear:
            messages.success(request, f"Override cleared for {value.customer_id}, {when}: the value is {value.value}.")
        else:
            messages.success(request, f"Override set for {value.customer_id}, {when}: the value is {value.value}.")
    return redirect(back)


@require_GET
@member_view()
def metric_values_export(request: HttpRequest, actor: Actor, slug: str) -> HttpResponse:
    """GET /metrics/<slug>/export.csv?customer=&from=&to=: the metric's values, streamed."""
    return metric_values_download(request, organisation=actor.organisation, slug=slug)
