"""Writes for billable metrics: definitions, recomputation of values, overrides."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from metrics.engine import (
    FILTER_OPS,
    GROUPABLE_TYPES,
    NUMERIC_AGGREGATIONS,
    BuilderDefinition,
    ComputedValue,
    builder_compute,
    decimal_text,
    dimension_key_of,
    to_decimal,
)
from metrics.models import Aggregation, BillableMetric, MetricKind, MetricValue, RecomputeState
from usage.models import DirtyBucket, Period, UsageEvent, UsageRecord
from usage.schema import CONVERTERS, InvalidValue, type_parse
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.enqueue import enqueue_on_commit
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.periods import merge_ranges, period_floor, period_next, periods_between

logger = logging.getLogger(__name__)
METRIC_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z", re.ASCII)
RESERVED_SLUGS = frozenset({"new", "preview"})  # dashboard and API routes beside /metrics/<slug>/
DEFINITION_FIELDS = ("kind", "usage_event", "aggregation", "field", "filters", "group_by", "sql", "granularity")
MAX_GROUP_BY = 3
MAX_FILTERS = 20
REFRESH_BATCH = 5000
PREVIEW_MAX_PERIODS = 1000


# --- definitions ---


def _sandbox_tables(organisation_id: Any) -> dict[str, Any]:
    from metrics.sandbox import SandboxTable

    return {
        e.api_slug: SandboxTable(slug=e.api_slug, usage_event_id=e.id, fields=dict(e.dataschema.get("data", {})))
        for e in UsageEvent.objects.filter(organisation_id=organisation_id, archived=False)
    }


def metric_definition_validate(*, organisation_id: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Check a definition (builder or SQL); return the clean fields, with `sources` (usage events)."""
    errors: dict[str, list[str]] = {}
    kind = body.get("kind") or (MetricKind.SQL if body.get("sql") else MetricKind.BUILDER)
    granularity = body.get("granularity", Period.DAY)
    if granularity not in Period.values:
        errors["granularity"] = [f"Granularity must be one of: {', '.join(Period.values)}."]
    clean: dict[str, Any] = {"kind": kind, "granularity": granularity}
    if kind == MetricKind.SQL:
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            errors["sql"] = ["Write one SELECT returning customer_id and quantity (and optionally dimension)."]
        else:
            from metrics.sandbox import sql_metric_compile

            tables = _sandbox_tables(organisation_id)
            try:
                compiled = sql_metric_compile(sql=sql, tables=tables, vendor=connection.vendor)
            except ValidationFailed as exc:
                errors.update(exc.errors)
            else:
                clean.update(
                    sql=sql,
                    usage_event=None,
                    aggregation="",
                    field="",
                    filters=[],
                    group_by=[],
                    sources=[tables[slug].usage_event_id for slug in compiled.sources],
                )
    elif kind == MetricKind.BUILDER:
        clean.update(_builder_validate(organisation_id=organisation_id, body=body, errors=errors))
    else:
        errors["kind"] = [f"Kind must be one of: {', '.join(MetricKind.values)}."]
    if errors:
        raise ValidationFailed(errors)
    return clean


def _builder_validate(*, organisation_id: Any, body: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    slug = body.get("usage_event")
    usage_event = (
        UsageEvent.objects.filter(organisation_id=organisation_id, api_slug=slug, archived=False).first()
        if isinstance(slug, str)
        else None
    )
    if usage_event is None:
        errors["usage_event"] = (
            [f"No active usage event with API slug {slug!r} in this organisation."]
            if slug
            else ["Choose the usage event the metric reads."]
        )
        return {}
    fields: dict[str, str] = usage_event.dataschema.get("data", {})
    aggregation = body.get("aggregation")
    field = body.get("field") or ""
    if not isinstance(field, str):
        errors["field"] = ["Expected a field name (a string)."]
        return {}
    if not isinstance(aggregation, str) or aggregation not in Aggregation.values:
        errors["aggregation"] = [f"Aggregation must be one of: {', '.join(Aggregation.values)}."]
    elif aggregation == Aggregation.COUNT:
        field = ""
    elif not field:
        errors["field"] = [f"The {aggregation} aggregation needs a field of {slug!r}."]
    elif field not in fields:
        errors["field"] = [f"Unknown field {field!r}; {slug!r} has: {', '.join(fields) or 'no fields'}."]
    elif aggregation in NUMERIC_AGGREGATIONS and type_parse(fields[field]).base not in ("Int64", "Float64", "Decimal"):
        errors["field"] = [f"The {aggregation} aggregation needs a numeric field; {field!r} is {fields[field]}."]
    filters = body.get("filters") or []
    clean_filters: list[dict[str, Any]] = []
    if not isinstance(filters, list) or len(filters) > MAX_FILTERS:
        errors["filters"] = [f"Filters are a list of at most {MAX_FILTERS} {{field, op, value}} objects."]
    else:
        for index, condition in enumerate(filters):
            path = f"filters[{index}]"
            if not isinstance(condition, dict):
                errors[path] = ["Expected an object {field, op, value}."]
                continue
            name, op = condition.get("field"), condition.get("op")
            if not isinstance(name, str) or name not in fields:
                errors[f"{path}.field"] = [f"Unknown field {name!r}."]
                continue
            if not isinstance(op, str) or op not in FILTER_OPS:
                errors[f"{path}.op"] = [f"Operator must be one of: {', '.join(FILTER_OPS)}."]
                continue
            base = type_parse(fields[name]).base
            if op in ("is_null", "is_not_null"):
                clean_filters.append({"field": name, "op": op})
                continue
            if op in ("gt", "gte", "lt", "lte") and base in ("Bool", "String", "UUID"):
                errors[f"{path}.op"] = [f"{op} does not apply to a {base} field."]
                continue
            values = condition.get("value")
            if op in ("in", "not_in"):
                if not isinstance(values, list) or not values:
                    errors[f"{path}.value"] = [f"{op} needs a non-empty list of values."]
                    continue
            else:
                values = [values]
            try:
                converted = [CONVERTERS[base](v) for v in values]
            except InvalidValue as exc:
                errors[f"{path}.value"] = [str(exc)]
                continue
            clean_filters.append(
                {"field": name, "op": op, "value": converted if op in ("in", "not_in") else converted[0]}
            )
    group_by = body.get("group_by") or []
    if (
        not isinstance(group_by, list)
        or len(group_by) > MAX_GROUP_BY
        or not all(isinstance(name, str) for name in group_by)
    ):
        errors["group_by"] = [f"group_by is a list of at most {MAX_GROUP_BY} field names."]
        group_by = []
    else:
        for name in group_by:
            if name not in fields:
                errors["group_by"] = [f"Unknown field {name!r}."]
            elif type_parse(fields[name]).base not in GROUPABLE_TYPES:
                errors["group_by"] = [
                    f"{name!r} is {fields[name]}; group by a String, Int64, Bool, Date32 or UUID field."
                ]
        if len(set(group_by)) != len(group_by):
            errors["group_by"] = ["A field appears twice."]
    return {
        "usage_event": usage_event,
        "aggregation": aggregation,
        "field": field,
        "filters": clean_filters,
        "group_by": list(group_by) if isinstance(group_by, list) else [],
        "sql": "",
        "sources": [usage_event.id],
    }


def metric_snapshot(metric: BillableMetric) -> dict[str, Any]:
    return {
        "name": metric.name,
        "slug": metric.slug,
        "kind": metric.kind,
        "usage_event": metric.usage_event.api_slug if metric.usage_event_id else None,  # type: ignore[union-attr]
        "aggregation": metric.aggregation,
        "field": metric.field,
        "filters": metric.filters,
        "group_by": metric.group_by,
        "sql": metric.sql,
        "granularity": metric.granularity,
        "version": metric.version,
        "archived": metric.archived,
    }


def _recompute_after_commit(metric: BillableMetric) -> None:
    from metrics.tasks import metric_recompute_task

    # If the broker is unreachable, the sweep restarts recomputes that make no progress.
    enqueue_on_commit(metric_recompute_task, (metric.id, metric.version))


@transaction.atomic
def metric_create(*, actor: Actor, body: dict[str, Any]) -> BillableMetric:
    errors: dict[str, list[str]] = {}
    name, slug = body.get("name"), body.get("slug")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        errors["name"] = ["A metric needs a name of 1 to 200 characters."]
    if not isinstance(slug, str) or not METRIC_SLUG_RE.match(slug):
        errors["slug"] = [
            "A slug is 1-64 characters: lowercase letters, digits, _ or -, starting with a letter or digit."
        ]
    elif slug in RESERVED_SLUGS:
        errors["slug"] = [f"{slug!r} is reserved; choose another slug."]
    elif BillableMetric.objects.filter(organisation=actor.organisation, slug=slug).exists():
        errors["slug"] = [f"The slug {slug!r} is already taken in this organisation."]
    try:
        clean = metric_definition_validate(organisation_id=actor.organisation.id, body=body)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    sources = clean.pop("sources")
    try:
        with transaction.atomic():
            metric = BillableMetric.objects.create(
                organisation=actor.organisation,
                name=name.strip(),  # type: ignore[union-attr]
                slug=str(slug),
                recompute_state=RecomputeState.RUNNING,
                recompute_version=1,
                **clean,
            )
    except IntegrityError:
        raise ValidationFailed({"slug": [f"The slug {slug!r} is already taken in this organisation."]}) from None
    metric.sources.set(sources)
    audit_record(
        actor=actor, action="metric.create", object_type="metric", object_id=metric.slug, after=metric_snapshot(metric)
    )
    _recompute_after_commit(metric)
    return metric


def _metric_locked(*, actor: Actor, slug: str) -> BillableMetric:
    metric = (
        BillableMetric.objects.select_for_update(of=("self",))
        .select_related("usage_event")
        .filter(organisation=actor.organisation, slug=slug)
        .first()
    )
    if metric is None:
        raise NotFound(f"No metric with slug {slug!r}.")
    return metric


@transaction.atomic
def metric_update(*, actor: Actor, slug: str, changes: dict[str, Any], reason: str = "") -> BillableMetric:
    """Edit a metric. A change to its definition bumps the version and recomputes all history."""
    metric = _metric_locked(actor=actor, slug=slug)
    before = metric_snapshot(metric)
    unknown = changes.keys() - {"name", "slug", *DEFINITION_FIELDS}
    if unknown:
        raise ValidationFailed({key: ["Unknown field."] for key in unknown})
    if "slug" in changes and changes["slug"] != metric.slug:
        raise ValidationFailed({"slug": ["A metric's slug cannot change."]})
    if "name" in changes:
        if not isinstance(changes["name"], str) or not changes["name"].strip():
            raise ValidationFailed({"name": ["A metric needs a name."]})
        metric.name = changes["name"].strip()
    if changes.keys() & set(DEFINITION_FIELDS):
        merged = {
            **before,
            "kind": changes.get("kind", metric.kind),
            **{k: v for k, v in changes.items() if k in DEFINITION_FIELDS},
        }
        clean = metric_definition_validate(organisation_id=actor.organisation.id, body=merged)
        sources = clean.pop("sources")
        if any(getattr(metric, key) != value for key, value in clean.items()):
            for key, value in clean.items():
                setattr(metric, key, value)
            metric.version += 1
            metric.recompute_state = RecomputeState.RUNNING
            metric.recompute_version = metric.version
            metric.recompute_done = 0
            metric.sources.set(sources)
            _recompute_after_commit(metric)
    metric.save()
    after = metric_snapshot(metric)
    if after != before:
        audit_record(
            actor=actor,
            action="metric.update",
            object_type="metric",
            object_id=metric.slug,
            before=before,
            after=after,
            reason=reason,
        )
    return metric


@transaction.atomic
def metric_archive(*, actor: Actor, slug: str, reason: str = "") -> BillableMetric:
    metric = _metric_locked(actor=actor, slug=slug)
    if not metric.archived:
        before = metric_snapshot(metric)
        metric.archived = True
        metric.save(update_fields=["archived", "updated_at"])
        audit_record(
            actor=actor,
            action="metric.archive",
            object_type="metric",
            object_id=metric.slug,
            before=before,
            after=metric_snapshot(metric),
            reason=reason,
        )
    return metric


# --- computing values ---


def builder_definition(metric: BillableMetric, *, fields: dict[str, str] | None = None) -> BuilderDefinition:
    assert metric.usage_event is not None
    return BuilderDefinition(
        usage_event_id=metric.usage_event.id,
        fields=fields if fields is not None else dict(metric.usage_event.dataschema.get("data", {})),
        aggregation=metric.aggregation,
        field=metric.field,
        filters=list(metric.filters),
        group_by=list(metric.group_by),
        granularity=metric.granularity,
    )


def metric_compute(*, metric: BillableMetric, start: dt.datetime, end: dt.datetime) -> list[ComputedValue]:
    """Values for the periods starting in [start, end), computed from raw records; nothing is stored."""
    if metric.kind == MetricKind.BUILDER:
        return builder_compute(definition=builder_definition(metric), start=start, end=end)
    from metrics.sandbox import sql_metric_compile, sql_metric_execute

    compiled = sql_metric_compile(
        sql=metric.sql, tables=_sandbox_tables(metric.organisation_id), vendor=connection.vendor
    )
    results = []
    for period_start in periods_between(start, end, metric.granularity):
        period_end = period_next(period_start, metric.granularity)
        for customer_id, quantity, dimension in sql_metric_execute(
            compiled=compiled,
            period_start=period_start,
            period_end=period_end,
            timeout_ms=settings.METRIC_SQL_TIMEOUT_MS,
        ):
            results.append(
                ComputedValue(
                    customer_id=customer_id,
                    period_start=period_start,
                    dimension={"dimension": dimension} if dimension is not None else None,
                    value=decimal_text(to_decimal(quantity)),
                )
            )
    return _merge_duplicates(results)


def _merge_duplicates(values: list[ComputedValue]) -> list[ComputedValue]:
    """A SQL metric may return one customer twice in a period: the amounts add up."""
    merged: dict[tuple[str, dt.datetime, str], ComputedValue] = {}
    for value in values:
        key = (value.customer_id, value.period_start, value.dimension_key)
        if key in merged and merged[key].value is not None and value.value is not None:
            total = to_decimal(merged[key].value) + to_decimal(value.value)  # type: ignore[operator]
            value = ComputedValue(value.customer_id, value.period_start, value.dimension, decimal_text(total))
        merged[key] = value
    return list(merged.values())


def metric_values_store(
    *, metric: BillableMetric, start: dt.datetime, end: dt.datetime, computed: list[ComputedValue]
) -> int:
    """Replace the stored values of periods in [start, end) with `computed` (an upsert per bucket).

    Values that vanished are deleted, unless an admin override holds them: those stay, marked stale.
    """
    stored = {
        (customer_id, period_start, dimension_key): (value_id, computed_value, version, stale, override)
        for value_id, customer_id, period_start, dimension_key, computed_value, version, stale, override in (
            MetricValue.objects.filter(metric=metric, period_start__gte=start, period_start__lt=end).values_list(
                "id",
                "customer_id",
                "period_start",
                "dimension_key",
                "computed_value",
                "metric_version",
                "stale",
                "override_value",
            )
        )
    }
    fresh = {(c.customer_id, c.period_start, c.dimension_key): c for c in computed}
    to_write = [
        value
        for key, value in fresh.items()
        if key not in stored or stored[key][1:4] != (value.value, metric.version, False)
    ]
    if to_write:
        _values_upsert(metric=metric, values=to_write)
    gone = [row for key, row in stored.items() if key not in fresh]
    overridden = [row[0] for row in gone if row[4] is not None]
    if overridden:
        MetricValue.objects.filter(id__in=overridden).update(
            stale=True, computed_value=None, metric_version=metric.version
        )
    removable = [row[0] for row in gone if row[4] is None]
    if removable:
        MetricValue.objects.filter(id__in=removable).delete()
    return len(to_write)


def _values_upsert(*, metric: BillableMetric, values: list[ComputedValue]) -> None:
    """Insert or update values by bucket; overrides are never touched."""
    if connection.vendor == "postgresql":
        # One statement per 5,000 values: arrays in, ON CONFLICT on the bucket's unique constraint.
        table = MetricValue._meta.db_table
        for offset in range(0, len(values), 5000):
            chunk = values[offset : offset + 5000]
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {table} (metric_id, customer_id, period_start, period_end, dimension, dimension_key,
                                         computed_value, override_reason, stale, metric_version, updated_at)
                    SELECT %s, t.customer_id, t.period_start, t.period_end, t.dimension::jsonb, t.dimension_key,
                           t.computed_value, '', false, %s, now()
                    FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
                         AS t(customer_id, period_start, period_end, dimension, dimension_key, computed_value)
                    ON CONFLICT (metric_id, customer_id, period_start, dimension_key) DO UPDATE
                    SET computed_value = EXCLUDED.computed_value, metric_version = EXCLUDED.metric_version,
                        stale = false, period_end = EXCLUDED.period_end, dimension = EXCLUDED.dimension,
                        updated_at = EXCLUDED.updated_at
                    """,  # noqa: S608 - the table name is the model's; values are parameters
                    [
                        metric.id,
                        metric.version,
                        [v.customer_id for v in chunk],
                        [v.period_start for v in chunk],
                        [period_next(v.period_start, metric.granularity) for v in chunk],
                        [orjson.dumps(v.dimension).decode() if v.dimension is not None else None for v in chunk],
                        [v.dimension_key for v in chunk],
                        [v.value for v in chunk],
                    ],
                )
        return
    MetricValue.objects.bulk_create(
        [
            MetricValue(
                metric=metric,
                customer_id=v.customer_id,
                period_start=v.period_start,
                period_end=period_next(v.period_start, metric.granularity),
                dimension=v.dimension,
                dimension_key=v.dimension_key,
                computed_value=v.value,
                metric_version=metric.version,
                stale=False,
            )
            for v in values
        ],
        update_conflicts=True,
        unique_fields=["metric", "customer_id", "period_start", "dimension_key"],
        update_fields=["computed_value", "metric_version", "stale", "period_end", "dimension", "updated_at"],
        batch_size=1000,
    )


def _lock_usage_event(usage_event_id: int, *, wait: bool) -> bool:
    """Serialise the engine per usage event (PostgreSQL): two workers never write one bucket at once,
    so an older snapshot can never overwrite a newer one. SQLite serialises writers anyway."""
    if connection.vendor != "postgresql":
        return True
    key = zlib.crc32(f"metrics:{usage_event_id}".encode())
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def metrics_over(usage_event_id: int) -> list[BillableMetric]:
    return list(
        BillableMetric.objects.filter(sources=usage_event_id, archived=False).select_related("usage_event").distinct()
    )


def metric_values_refresh(*, usage_event_id: int, max_rounds: int = 20) -> int:
    """Recompute every metric period touched by the usage event's dirty hours; returns hours processed.

    Each round claims a bounded batch of dirty rows, recomputes the affected periods from raw records,
    stores them and deletes exactly the claimed rows, in one transaction: a crash rolls all of it back
    and leaves the rows for the next run; rows added meanwhile stay for the next round.
    """
    processed = 0
    for _ in range(max_rounds):
        with transaction.atomic():
            if not _lock_usage_event(usage_event_id, wait=False):
                return processed  # another worker is on this usage event and loops until it is clean
            dirty = list(
                DirtyBucket.objects.filter(usage_event_id=usage_event_id)
                .order_by("id")
                .values_list("id", "hour_start")[:REFRESH_BATCH]
            )
            if not dirty:
                return processed
            hours = {hour for _, hour in dirty}
            for metric in metrics_over(usage_event_id):
                periods = {period_floor(hour, metric.granularity) for hour in hours}
                for start, end in merge_ranges(periods, metric.granularity):
                    metric_values_store(
                        metric=metric,
                        start=start,
                        end=end,
                        computed=metric_compute(metric=metric, start=start, end=end),
                    )
            DirtyBucket.objects.filter(id__in=[row_id for row_id, _ in dirty]).delete()
            processed += len(dirty)
    return processed


def dirty_usage_events(*, older_than_seconds: float = 0) -> list[int]:
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    return sorted(
        set(DirtyBucket.objects.filter(created_at__lte=cutoff).values_list("usage_event_id", flat=True)[:1000])
    )


def stalled_recomputes(*, older_than_seconds: float) -> list[tuple[int, int]]:
    """(metric id, version) of recomputes that stopped making progress (their worker died)."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    return list(
        BillableMetric.objects.filter(recompute_state=RecomputeState.RUNNING, updated_at__lt=cutoff).values_list(
            "id", "version"
        )
    )


def records_range(*, usage_event_ids: list[int]) -> tuple[dt.datetime, dt.datetime] | None:
    bounds = UsageRecord.objects.filter(usage_event_id__in=usage_event_ids).aggregate(
        first=Min("timestamp"), last=Max("timestamp")
    )
    if bounds["first"] is None:
        return None
    return bounds["first"], bounds["last"]


def metric_recompute(*, metric_id: int, version: int, progress: Callable[[int, int], None] | None = None) -> bool:
    """Recompute a metric's whole history for `version`, a month of data per transaction, with progress.

    Returns False when the metric moved on to a newer version (that version's task does the work).
    """
    metric = BillableMetric.objects.select_related("usage_event").filter(id=metric_id).first()
    if metric is None or metric.version != version:
        return False
    source_ids = list(metric.sources.values_list("id", flat=True))
    bounds = records_range(usage_event_ids=source_ids)
    chunks: list[tuple[dt.datetime, dt.datetime]] = []
    if bounds is not None:
        month = period_floor(bounds[0], Period.MONTH)
        while month <= bounds[1]:
            chunks.append((month, period_next(month, Period.MONTH)))
            month = chunks[-1][1]
    BillableMetric.objects.filter(id=metric_id, version=version).update(
        recompute_state=RecomputeState.RUNNING,
        recompute_version=version,
        recompute_total=len(chunks),
        recompute_done=0,
        updated_at=timezone.now(),
    )
    for done, (start, end) in enumerate(chunks, start=1):
        with transaction.atomic():
            for usage_event_id in source_ids:
                _lock_usage_event(usage_event_id, wait=True)
            current = BillableMetric.objects.filter(id=metric_id).values_list("version", flat=True).first()
            if current != version:
                return False
            metric_values_store(
                metric=metric, start=start, end=end, computed=metric_compute(metric=metric, start=start, end=end)
            )
            BillableMetric.objects.filter(id=metric_id, version=version).update(
                recompute_done=done, updated_at=timezone.now()
            )
        if progress is not None:
            progress(done, len(chunks))
        if settings.METRICS_RECOMPUTE_THROTTLE_SECONDS:
            time.sleep(settings.METRICS_RECOMPUTE_THROTTLE_SECONDS)
    with transaction.atomic():
        # Values outside the data's range (its records were voided or moved) go too.
        outside = MetricValue.objects.filter(metric=metric)
        if chunks:
            outside = outside.exclude(period_start__gte=chunks[0][0], period_start__lt=chunks[-1][1])
        outside.filter(override_value__isnull=True).delete()
        outside.filter(override_value__isnull=False).update(stale=True, computed_value=None, metric_version=version)
        BillableMetric.objects.filter(id=metric_id, version=version).update(recompute_state=RecomputeState.IDLE)
    return True


# --- overrides ---


@transaction.atomic
def metric_value_override(
    *, actor: Actor, metric_slug: str, value_id: int, override_value: Any, reason: str
) -> MetricValue:
    """Set (or with None, clear) an admin override on one value; audited with its reason."""
    value = (
        MetricValue.objects.select_for_update()
        .filter(id=value_id, metric__slug=metric_slug, metric__organisation=actor.organisation)
        .first()
    )
    if value is None:
        raise NotFound(f"No value {value_id} in metric {metric_slug!r}.")
    if override_value is not None:
        try:
            override_value = decimal_text(to_decimal(CONVERTERS["Decimal"](override_value)))
        except InvalidValue as exc:
            raise ValidationFailed({"override_value": [str(exc)]}) from None
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed({"reason": ["Say why the value is overridden (or the override cleared)."]})
    before = {
        "metric": metric_slug,
        "customer_id": value.customer_id,
        "period_start": value.period_start.isoformat(),
        "override_value": value.override_value,
        "computed_value": value.computed_value,
    }
    value.override_value = override_value
    value.override_reason = reason.strip() if override_value is not None else ""
    value.save(update_fields=["override_value", "override_reason", "updated_at"])
    audit_record(
        actor=actor,
        action="metric_value.override" if override_value is not None else "metric_value.clear_override",
        object_type="metric_value",
        object_id=str(value.id),
        before=before,
        after={**before, "override_value": value.override_value},
        reason=reason.strip(),
    )
    return value


def dimension_key(dimension: dict[str, Any] | None) -> str:
    return dimension_key_of(dimension)
