"""Management API for billable metrics and their values (SPEC §4)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import django_filters
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from metrics.definitions import metric_archive, metric_create, metric_definition_validate, metric_update
from metrics.engine.builder import ComputedValue
from metrics.engine.compute import PREVIEW_MAX_PERIODS, DeadlinePassed, metric_compute
from metrics.models import BillableMetric, MetricValue, RecomputeState
from metrics.selectors import metric_get, metric_total, metric_values_list, metrics_list
from metrics.services import metric_value_override
from usage.records_api import UtcDateTimeFilter
from usage.schema import InvalidValue, datetime_parse
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.pagination import paginated_response
from zenskar_site.lib.periods import period_next, periods_between


class MetricOutput(serializers.ModelSerializer[BillableMetric]):
    usage_event = serializers.SerializerMethodField()
    recompute = serializers.SerializerMethodField()

    class Meta:
        model = BillableMetric
        fields = [
            "name",
            "slug",
            "kind",
            "granularity",
            "version",
            "usage_event",
            "aggregation",
            "field",
            "filters",
            "group_by",
            "sql",
            "archived",
            "created_at",
            "updated_at",
            "recompute",
        ]

    def get_usage_event(self, obj: BillableMetric) -> str | None:
        return obj.usage_event.api_slug if obj.usage_event is not None else None

    def get_recompute(self, obj: BillableMetric) -> dict[str, Any]:
        failed = obj.recompute_state == RecomputeState.FAILED
        return {
            "state": obj.recompute_state,
            "version": obj.recompute_version,
            "done": obj.recompute_done,
            "total": obj.recompute_total,
            # The last failure's first line, kept while a retry runs; "" once the metric is up to date.
            "error": obj.recompute_error,
            "failures": obj.recompute_failures,
            "retry_at": serializers.DateTimeField().to_representation(obj.recompute_retry_at)
            if failed and obj.recompute_retry_at is not None
            else None,
            # Periods a SQL metric owes because its organisation had used its SQL budget, and when the
            # sweep computes them (not a failure).
            "deferred_until": serializers.DateTimeField().to_representation(obj.deferred_until)
            if obj.deferred_until is not None
            else None,
            "deferred_ranges": obj.deferred_ranges,
        }

    def to_representation(self, instance: BillableMetric) -> dict[str, Any]:
        data = dict(super().to_representation(instance))
        drop = ("usage_event", "aggregation", "field", "filters", "group_by") if instance.kind == "sql" else ("sql",)
        return {k: v for k, v in data.items() if k not in drop}


class MetricInput(serializers.Serializer[Any]):
    name = serializers.CharField()
    slug = serializers.CharField()
    kind = serializers.ChoiceField(choices=["builder", "sql"], required=False)
    granularity = serializers.ChoiceField(choices=["hour", "day", "month"], default="day")
    usage_event = serializers.CharField(required=False, help_text="Builder: the usage event's API slug.")
    aggregation = serializers.ChoiceField(
        choices=["count", "sum", "min", "max", "avg", "unique_count", "latest"], required=False
    )
    field = serializers.CharField(required=False)
    filters = serializers.JSONField(required=False, help_text='[{"field", "op", "value"}]')
    group_by = serializers.ListField(child=serializers.CharField(), required=False)
    sql = serializers.CharField(required=False)


class MetricValueOutput(serializers.ModelSerializer[MetricValue]):
    value = serializers.CharField(allow_null=True, read_only=True)

    class Meta:
        model = MetricValue
        fields = [
            "id",
            "customer_id",
            "period_start",
            "period_end",
            "dimension",
            "computed_value",
            "override_value",
            "value",
            "metric_version",
            "stale",
        ]


def body_object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed({"": ["Expected a JSON object."]})
    return dict(request.data)


def parse_moment(value: Any, name: str) -> dt.datetime:
    if value in (None, ""):
        raise ValidationFailed({name: ["This field is required (ISO 8601, e.g. 2026-11-01T00:00:00Z)."]})
    try:
        return datetime_parse(value)
    except InvalidValue as exc:
        raise ValidationFailed({name: [str(exc)]}) from None


def parse_window(data: Any) -> tuple[dt.datetime, dt.datetime]:
    start, end = parse_moment(data.get("start"), "start"), parse_moment(data.get("end"), "end")
    if end <= start:
        raise ValidationFailed({"end": ["end must be after start."]})
    return start, end


def preview_deadline() -> float:
    """When a preview starting now must be done: one budget for parsing, compiling and every period.

    Taken when the request starts, so the checks of an unsaved definition count against it too.
    """
    return time.monotonic() + settings.METRIC_PREVIEW_BUDGET_MS / 1000


def preview_body(metric: BillableMetric, start: dt.datetime, end: dt.datetime, *, deadline: float) -> dict[str, Any]:
    if len(periods_between(start, end, metric.granularity, limit=PREVIEW_MAX_PERIODS + 1)) > PREVIEW_MAX_PERIODS:
        raise ValidationFailed({"end": [f"Preview at most {PREVIEW_MAX_PERIODS} {metric.granularity} periods."]})
    try:
        computed = metric_compute(metric=metric, start=start, end=end, deadline=deadline)
    except DeadlinePassed as exc:
        budget = settings.METRIC_PREVIEW_BUDGET_MS
        raise ValidationFailed(
            {
                "end": [
                    f"The preview took longer than its budget of {budget} ms and was stopped after "
                    f"{exc.periods_done} of {exc.periods_total} {metric.granularity} periods: "
                    "preview a shorter window, or make the query cheaper."
                ]
            }
        ) from None
    computed.sort(key=lambda c: (c.period_start, c.customer_id, c.dimension_key))
    return {"start": start, "end": end, "values": [preview_value(metric, c) for c in computed]}


def preview_value(metric: BillableMetric, value: ComputedValue) -> dict[str, Any]:
    return {
        "customer_id": value.customer_id,
        "period_start": value.period_start,
        "period_end": period_next(value.period_start, metric.granularity),
        "dimension": value.dimension,
        "value": value.value,
    }


def render_times(body: Any) -> Any:
    """Datetimes as ISO 8601 in UTC with Z, in a plain structure."""
    if isinstance(body, dict):
        return {k: render_times(v) for k, v in body.items()}
    if isinstance(body, list):
        return [render_times(v) for v in body]
    if isinstance(body, dt.datetime):
        return body.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return body


class MetricListApi(APIView):
    @extend_schema(responses=MetricOutput(many=True))
    def get(self, request: Request) -> Response:
        actor = request_actor(request)
        return paginated_response(
            request=request,
            view=self,
            queryset=metrics_list(organisation=actor.organisation),
            serialize=lambda page: MetricOutput(page, many=True).data,
            ordering="id",
        )

    @extend_schema(request=MetricInput, responses={201: MetricOutput})
    def post(self, request: Request) -> Response:
        metric = metric_create(actor=request_actor(request), body=body_object(request))
        return Response(MetricOutput(metric).data, status=status.HTTP_201_CREATED)


class MetricDetailApi(APIView):
    @extend_schema(responses=MetricOutput)
    def get(self, request: Request, slug: str) -> Response:
        return Response(MetricOutput(metric_get(organisation=request_actor(request).organisation, slug=slug)).data)

    @extend_schema(request=MetricInput, responses=MetricOutput)
    def patch(self, request: Request, slug: str) -> Response:
        body = body_object(request)
        reason = str(body.pop("reason", "") or "")
        metric = metric_update(actor=request_actor(request), slug=slug, changes=body, reason=reason)
        return Response(MetricOutput(metric).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        metric_archive(actor=request_actor(request), slug=slug)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PreviewInput(serializers.Serializer[Any]):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class MetricPreviewApi(APIView):
    @extend_schema(request=PreviewInput, responses={200: dict})
    def post(self, request: Request, slug: str) -> Response:
        deadline = preview_deadline()
        metric = metric_get(organisation=request_actor(request).organisation, slug=slug)
        start, end = parse_window(body_object(request))
        return Response(render_times(preview_body(metric, start, end, deadline=deadline)))


class MetricUnsavedPreviewApi(APIView):
    @extend_schema(request=MetricInput, responses={200: dict}, operation_id="metrics_preview_unsaved")
    def post(self, request: Request) -> Response:
        deadline = preview_deadline()
        actor = request_actor(request)
        body = body_object(request)
        start, end = parse_window(body)
        clean = metric_definition_validate(organisation_id=actor.organisation.id, body=body)
        clean.pop("sources")
        metric = BillableMetric(organisation=actor.organisation, name="preview", slug="preview", **clean)
        return Response(render_times(preview_body(metric, start, end, deadline=deadline)))


class ValueFilter(django_filters.FilterSet):
    customer_id = django_filters.CharFilter()
    period_start_after = UtcDateTimeFilter(field_name="period_start", lookup_expr="gte")
    period_start_before = UtcDateTimeFilter(field_name="period_start", lookup_expr="lt")

    class Meta:
        model = MetricValue
        fields = ["customer_id", "period_start_after", "period_start_before"]


class MetricValueListApi(ListAPIView[MetricValue]):
    serializer_class = MetricValueOutput
    filterset_class = ValueFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return MetricValue.objects.none()
        metric = metric_get(organisation=request_actor(self.request).organisation, slug=self.kwargs["slug"])
        return metric_values_list(metric=metric)


class OverrideInput(serializers.Serializer[Any]):
    override_value = serializers.CharField(allow_null=True, help_text="A decimal amount, or null to clear.")
    reason = serializers.CharField()


class MetricValueDetailApi(APIView):
    @extend_schema(request=OverrideInput, responses=MetricValueOutput)
    def patch(self, request: Request, slug: str, value_id: int) -> Response:
        body = body_object(request)
        if "override_value" not in body:
            raise ValidationFailed({"override_value": ["Give a decimal amount, or null to clear the override."]})
        value = metric_value_override(
            actor=request_actor(request),
            metric_slug=slug,
            value_id=value_id,
            override_value=body["override_value"],
            reason=body.get("reason", ""),
        )
        return Response(MetricValueOutput(value).data)


class MetricTotalApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("customer_id", str, required=True),
            OpenApiParameter("start", str, required=True, description="ISO 8601"),
            OpenApiParameter("end", str, required=True, description="ISO 8601"),
        ],
        responses={200: dict},
    )
    def get(self, request: Request, slug: str) -> Response:
        metric = metric_get(organisation=request_actor(request).organisation, slug=slug)
        customer_id = request.query_params.get("customer_id")
        if not customer_id:
            raise ValidationFailed({"customer_id": ["This field is required."]})
        start, end = parse_window(request.query_params)
        fields = metric_total(metric=metric, customer_id=customer_id, start=start, end=end)
        return Response(render_times({"customer_id": customer_id, "start": start, "end": end, "fields": fields}))
