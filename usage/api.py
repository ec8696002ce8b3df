"""Management API for usage-event definitions (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage.dirty import records_changed_announce
from usage.ingestion import (
    IngestError,
    IngestResult,
    StaleContext,
    api_key_mark_used,
    ingest_context_cached,
    ingest_context_forget,
    ingest_context_load,
    records_ingest,
)
from usage.models import Period, UsageEvent, UsageEventKind
from usage.selectors import usage_event_get, usage_events_list
from usage.services import usage_event_archive, usage_event_create, usage_event_update
from zenskar_site.accounts.authentication import presented_key
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.pagination import CursorPagination
from zenskar_site.lib.ratelimit import rate_limit_retry_after


class DataSchemaField(serializers.JSONField):
    pass


class UsageEventOutput(serializers.ModelSerializer[UsageEvent]):
    endpoint = serializers.SerializerMethodField()

    class Meta:
        model = UsageEvent
        fields = [
            "name",
            "api_slug",
            "kind",
            "aggregate_period",
            "description",
            "dataschema",
            "archived",
            "created_at",
            "updated_at",
            "endpoint",
        ]

    def get_endpoint(self, obj: UsageEvent) -> str:
        request = self.context.get("request")
        path = f"/usage/{obj.api_slug}"
        return request.build_absolute_uri(path) if request is not None else path


class UsageEventCreateInput(serializers.Serializer[Any]):
    """Documents the body; the service validates it and names each bad field."""

    name = serializers.CharField()
    api_slug = serializers.CharField()
    kind = serializers.ChoiceField(choices=UsageEventKind.choices, default=UsageEventKind.EVENT)
    aggregate_period = serializers.ChoiceField(choices=Period.choices, required=False, allow_null=True)
    description = serializers.CharField(required=False, allow_blank=True)
    dataschema = DataSchemaField(
        help_text='{"customer_id": "String", "timestamp": "DateTime64", "data": {"field": "Type"}}'
    )


class UsageEventUpdateInput(serializers.Serializer[Any]):
    name = serializers.CharField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    dataschema = DataSchemaField(required=False, help_text="May only add Nullable fields.")
    reason = serializers.CharField(required=False, allow_blank=True)


def request_object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed({"": ["Expected a JSON object."]})
    return dict(request.data)


class UsageEventListApi(APIView):
    @extend_schema(
        responses=UsageEventOutput(many=True),
        parameters=[OpenApiParameter("include_archived", bool, description="Also list archived usage events.")],
    )
    def get(self, request: Request) -> Response:
        actor = request_actor(request)
        include_archived = request.query_params.get("include_archived", "").lower() in {"1", "true", "yes"}
        events = usage_events_list(organisation=actor.organisation, include_archived=include_archived)
        paginator = CursorPagination()
        paginator.ordering = "id"
        page = paginator.paginate_queryset(events, request, view=self)
        data = UsageEventOutput(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(request=UsageEventCreateInput, responses={201: UsageEventOutput})
    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        body = request_object(request)
        usage_event = usage_event_create(
            actor=actor,
            name=body.get("name"),
            api_slug=body.get("api_slug"),
            kind=body.get("kind", UsageEventKind.EVENT),
            aggregate_period=body.get("aggregate_period"),
            description=body.get("description", ""),
            dataschema=body.get("dataschema"),
        )
        return Response(
            UsageEventOutput(usage_event, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class UsageEventDetailApi(APIView):
    @extend_schema(responses=UsageEventOutput)
    def get(self, request: Request, api_slug: str) -> Response:
        actor = request_actor(request)
        usage_event = usage_event_get(organisation=actor.organisation, api_slug=api_slug)
        return Response(UsageEventOutput(usage_event, context={"request": request}).data)

    @extend_schema(request=UsageEventUpdateInput, responses=UsageEventOutput)
    def patch(self, request: Request, api_slug: str) -> Response:
        actor = request_actor(request)
        body = request_object(request)
        reason = body.pop("reason", "") or ""
        usage_event = usage_event_update(actor=actor, api_slug=api_slug, changes=body, reason=str(reason))
        return Response(UsageEventOutput(usage_event, context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, api_slug: str) -> Response:
        actor = request_actor(request)
        usage_event_archive(actor=actor, api_slug=api_slug)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- ingestion: POST /usage/{api_slug} -------------------------------------------------------
# A plain Django view rather than DRF: the hot path parses its body once, in one place.


def _json(body: Any, status_code: int, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status_code, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@dataclass
class IngestCall:
    """What ingestion needs of an HTTP request, whichever layer parsed it (Django or the lean WSGI route)."""

    api_slug: str
    secret: str | None
    organisation_header: str | None
    content_type: str
    content_length: str
    backfill: bool
    read: Callable[[int], bytes]


def _read_body(call: IngestCall) -> bytes:
    limit = settings.INGEST_MAX_BODY_BYTES
    if call.content_length.isdigit() and int(call.content_length) > limit:
        raise IngestError(413, f"The body is over the limit of {limit} bytes.")
    body = call.read(limit + 1)
    if len(body) > limit:
        raise IngestError(413, f"The body is over the limit of {limit} bytes.")
    return body


def ingest_handle(call: IngestCall) -> tuple[int, bytes, dict[str, str]]:
    """POST /usage/{api_slug}: status, JSON body and headers (SPEC §3)."""
    now = timezone.now()  # one clock reading for the whole request
    try:
        context = ingest_context_cached(
            secret=call.secret, api_slug=call.api_slug, organisation_header=call.organisation_header
        ) or ingest_context_load(
            secret=call.secret, api_slug=call.api_slug, organisation_header=call.organisation_header
        )
        retry_after = rate_limit_retry_after(organisation_id=context.api_key.organisation_id, now=now.timestamp())
        if retry_after is not None:
            raise IngestError(
                429, "Over the organisation's rate limit; retry later.", {"Retry-After": str(retry_after)}
            )
        content_type = call.content_type.split(";", 1)[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise IngestError(415, f"Send JSON with Content-Type: application/json (got {content_type or 'none'!r}).")
        body = _read_body(call)
        api_key_mark_used(api_key=context.api_key, now=now)
        try:
            result = records_ingest(context=context, body=body, backfill=call.backfill, now=now)
        except StaleContext:  # revoked, archived or redefined since cached: answer from the database's state
            ingest_context_forget(api_key_prefix=context.api_key.prefix, api_slug=call.api_slug)
            context = ingest_context_load(
                secret=call.secret, api_slug=call.api_slug, organisation_header=call.organisation_header
            )
            try:
                result = records_ingest(context=context, body=body, backfill=call.backfill, now=now)
            except StaleContext:  # changed again between the reload and the write: nothing was written
                raise IngestError(
                    503,
                    "The usage event changed while this request was written; nothing was stored. Retry.",
                    {"Retry-After": "1"},
                ) from None
    except IngestError as exc:
        return exc.status_code, orjson.dumps({"detail": exc.detail}), exc.headers
    except (OperationalError, InterfaceError):
        # Never a 2xx for unsaved data: the transaction did not commit.
        detail = {"detail": "The database is unavailable; nothing was stored. Retry later."}
        return 503, orjson.dumps(detail), {"Retry-After": "5"}
    on_ingested(result=result)
    return result.status_code, orjson.dumps(result.body()), {}


def backfill_requested(query: str) -> bool:
    return any(part.lower() in ("backfill=true", "backfill=1", "backfill=yes") for part in query.split("&"))


@csrf_exempt
def ingest(request: HttpRequest, api_slug: str) -> HttpResponse:
    if request.method != "POST":
        return _json({"detail": "Use POST to send usage."}, 405, {"Allow": "POST"})
    call = IngestCall(
        api_slug=api_slug,
        secret=presented_key(request),
        organisation_header=request.META.get("HTTP_ORGANISATION"),
        content_type=request.META.get("CONTENT_TYPE", ""),
        content_length=request.META.get("CONTENT_LENGTH") or "",
        backfill=backfill_requested(request.META.get("QUERY_STRING", "")),
        read=request.read,
    )
    status_code, body, headers = ingest_handle(call)
    response = HttpResponse(body, status=status_code, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


def on_ingested(*, result: IngestResult) -> None:
    """Tell the metrics (which defer their refresh to after commit) that the usage event changed."""
    if result.accepted:
        records_changed_announce(usage_event_id=result.usage_event_id)
