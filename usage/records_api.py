"""Read API for a usage event's records and its ingestion error log (SPEC §4)."""

from __future__ import annotations

from typing import Any

import django_filters
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from usage.models import IngestionError, UsageEvent, UsageRecord
from usage.selectors import ingestion_errors_list, record_get, records_list, usage_event_get
from zenskar_site.permissions import request_actor


class RecordOutput(serializers.ModelSerializer[UsageRecord]):
    class Meta:
        model = UsageRecord
        fields = ["id", "customer_id", "timestamp", "data", "idempotency_key", "received_at", "voided", "superseded"]


class IngestionErrorOutput(serializers.ModelSerializer[IngestionError]):
    class Meta:
        model = IngestionError
        fields = ["id", "received_at", "payload", "payload_truncated", "errors", "api_key_prefix"]


class RecordFilter(django_filters.FilterSet):
    customer_id = django_filters.CharFilter()
    timestamp_after = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    timestamp_before = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")
    include_voided = django_filters.BooleanFilter(method="filter_include_voided")

    class Meta:
        model = UsageRecord
        fields = ["customer_id", "timestamp_after", "timestamp_before", "include_voided"]

    def filter_include_voided(self, queryset: Any, name: str, value: bool | None) -> Any:
        return queryset  # applied in get_queryset, which needs it before filtering


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


class IngestionErrorListApi(UsageEventScoped, ListAPIView[IngestionError]):
    serializer_class = IngestionErrorOutput

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return IngestionError.objects.none()
        return ingestion_errors_list(usage_event=self.usage_event())
