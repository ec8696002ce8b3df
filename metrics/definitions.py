"""Billable metric definitions: validating a builder or SQL definition, and creating, editing and
archiving metrics (a definition change bumps the version and recomputes the history)."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, connection, transaction

from metrics.engine.builder import FILTER_OPS, GROUPABLE_TYPES, NUMERIC_AGGREGATIONS
from metrics.engine.compute import sandbox_tables
from metrics.models import Aggregation, BillableMetric, MetricKind, RecomputeState
from usage.models import Period, UsageEvent
from usage.schema import CONVERTERS, InvalidValue, type_parse
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.enqueue import enqueue_on_commit
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.text import has_unstorable, printable

METRIC_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z", re.ASCII)
RESERVED_SLUGS = frozenset({"new", "preview"})  # dashboard and API routes beside /metrics/<slug>/
DEFINITION_FIELDS = ("kind", "usage_event", "aggregation", "field", "filters", "group_by", "sql", "granularity")
MAX_GROUP_BY = 3
MAX_FILTERS = 20


def _refuse_unstorable(body: dict[str, Any]) -> None:
    """A name, query or filter value the database cannot store (NUL, a lone surrogate) is a 400 naming its field."""
    errors = {
        printable(str(key)): ["Contains a character that cannot be stored (U+0000 or a lone surrogate); remove it."]
        for key, value in body.items()
        if has_unstorable(key) or has_unstorable(value)
    }
    if errors:
        raise ValidationFailed(errors)


def metric_definition_validate(*, organisation_id: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Check a definition (builder or SQL); return the clean fields, with `sources` (usage events)."""
    _refuse_unstorable(body)
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

            tables = sandbox_tables(organisation_id)
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
    _refuse_unstorable(body)
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
    _refuse_unstorable(changes)
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
