"""Read API for a usage event's records and its ingestion error log (SPEC §4)."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage.corrections import record_restore, record_update, record_void, records_void_by_filter
from usage.models import IngestionError, UsageEvent, UsageRecord
from usage.schema import InvalidValue, filter_datetime_parse
from usage.selectors import ingestion_errors_list, record_get, records_list, usage_event_get
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.text import unstorable_message


class RecordOutput(serializers.ModelSerializer[UsageRecord]):
    class Meta:
        model = UsageRecord
        fields = ["id", "customer_id", "timestamp", "data", "idempotency_key", "received_at", "voided", "superseded"]


class IngestionErrorOutput(serializers.ModelSerializer[IngestionError]):
    class Meta:
        model = IngestionError
        fields = ["id", "received_at", "payload", "payload_truncated", "errors", "api_key_prefix"]


class UtcDateTimeField(forms.Field):
    def to_python(self, value: Any) -> Any:
        if value in self.empty_values:
            return None
        try:
            return filter_datetime_parse(value)
        except InvalidValue as exc:
            raise forms.ValidationError(str(exc)) from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601, normalised to UTC; an offset or instant the database cannot take is a 400 naming the filter."""

    field_class = UtcDateTimeField


class RecordFilter(django_filters.FilterSet):
    customer_id = django_filters.CharFilter()
    timestamp_after = UtcDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    timestamp_before = UtcDateTimeFilter(field_name="timestamp", lookup_expr="lt")
    include_voided = django_filters.BooleanFilter(method="filter_include_voided")

    class Meta:
        model = UsageRecord
        fields = ["customer_id", "timestamp_after", "timestamp_before", "include_voided"]

    def filter_include_voided(self, queryset: Any, name: str, value: bool | None) -> Any:
        return queryset  # applied in get_queryset, which needs it before filtering


class RecordEditInput(serializers.Serializer[Any]):
    customer_id = serializers.CharField(required=False)
    timestamp = serializers.CharField(required=False)
    data = serializers.JSONField(  # type: ignore[assignment]
        required=False, help_text="Merged into the record's data; null removes a field."
    )
    reason = serializers.CharField(required=False)


class ReasonInput(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False)


def body_object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed({"": ["Expected a JSON object."]})
    return dict(request.data)


def text_checked(name: str, value: Any) -> Any:
    """A free-text input (a reason, a filter) refused when the database could not store it."""
    problem = unstorable_message(value) if isinstance(value, str) else None
    if problem is not None:
        raise ValidationFailed({name: [problem]})
    return value


class UsageEventScoped:
    request: Any
    kwargs: dict[str, Any]

    def usage_event(self) -> UsageEvent:
        cached = getattr(self, "_usage_event", None)
        if cached is None:
            cached = usage_event_get(
                organisation=request_actor(self.request).organisation, api_slug=self.kwargs["api_slug"]
            )
            self._usage_event = cached
        return cached


class RecordListApi(UsageEventScoped, ListAPIView[UsageRecord]):
    serializer_class = RecordOutput
    filterset_class = RecordFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return UsageRecord.objects.none()
        include_voided = self.request.query_params.get("include_voided", "").lower() in {"1", "true", "yes"}
        return records_list(usage_event=self.usage_event(), include_voided=include_voided)


class RecordDetailApi(UsageEventScoped, RetrieveAPIView[UsageRecord]):
    serializer_class = RecordOutput

    def get_object(self) -> UsageRecord:
        return record_get(usage_event=self.usage_event(), record_id=int(self.kwargs["record_id"]))

    @extend_schema(request=RecordEditInput, responses=RecordOutput)
    def patch(self, request: Request, api_slug: str, record_id: int) -> Response:
        body = body_object(request)
        # customer_id, timestamp and data go through the ingestion validator (record_update); the reason is audited.
        reason = text_checked("reason", body.pop("reason", ""))
        record = record_update(
            actor=request_actor(request), api_slug=api_slug, record_id=record_id, changes=body, reason=reason
        )
        return Response(RecordOutput(record).data)

    @extend_schema(
        parameters=[OpenApiParameter("reason", str, description="Why the record is voided.")],
        responses={200: RecordOutput},  # the voided record (a bare serializer would be documented as a 204)
    )
    def delete(self, request: Request, api_slug: str, record_id: int) -> Response:
        reason = request.query_params.get("reason") or text_checked(
            "reason", request.data.get("reason") if isinstance(request.data, dict) else ""
        )
        record = record_void(actor=request_actor(request), api_slug=api_slug, record_id=record_id, reason=reason)
        return Response(RecordOutput(record).data)


class RecordRestoreApi(APIView):
    @extend_schema(request=ReasonInput, responses=RecordOutput)
    def post(self, request: Request, api_slug: str, record_id: int) -> Response:
        reason = text_checked("reason", body_object(request).get("reason", ""))
        record = record_restore(actor=request_actor(request), api_slug=api_slug, record_id=record_id, reason=reason)
        return Response(RecordOutput(record).data)


class VoidByFilterInput(serializers.Serializer[Any]):
    customer_id = serializers.CharField(required=False)
    timestamp_after = serializers.DateTimeField(required=False)
    timestamp_before = serializers.DateTimeField(required=False)
    all = serializers.BooleanField(required=False, help_text="Void every record when no filter is given.")
    reason = serializers.CharField(required=False)


class RecordVoidByFilterApi(APIView):
    @extend_schema(request=VoidByFilterInput, responses={200: dict})
    def post(self, request: Request, api_slug: str) -> Response:
        body = body_object(request)
        moments = {}
        for name in ("timestamp_after", "timestamp_before"):
            if body.get(name) not in (None, ""):
                try:
                    moments[name] = filter_datetime_parse(body[name])
                except InvalidValue as exc:
                    raise ValidationFailed({name: [str(exc)]}) from None
        customer_id = text_checked("customer_id", body.get("customer_id"))
        if customer_id is not None and not isinstance(customer_id, str):
            raise ValidationFailed({"customer_id": ["Expected a string."]})
        voided = records_void_by_filter(
            actor=request_actor(request),
            api_slug=api_slug,
            customer_id=customer_id,
            start=moments.get("timestamp_after"),
            end=moments.get("timestamp_before"),
            everything=body.get("all") is True,
            reason=text_checked("reason", body.get("reason", "")),
        )
        return Response({"voided": voided})


class IngestionErrorListApi(UsageEventScoped, ListAPIView[IngestionError]):
    serializer_class = IngestionErrorOutput

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return IngestionError.objects.none()
        return ingestion_errors_list(usage_event=self.usage_event())
