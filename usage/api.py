"""Management API for usage-event definitions (SPEC §4)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage.models import Period, UsageEvent, UsageEventKind
from usage.selectors import usage_event_get, usage_events_list
from usage.services import usage_event_archive, usage_event_create, usage_event_update
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.openapi import error_response
from zenskar_site.lib.pagination import paginated_response
from zenskar_site.lib.text import unstorable_problems


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
    # Names, descriptions, reasons and the schema are stored as given: a NUL would fail the write.
    problems = unstorable_problems(request.data)
    if problems:
        raise ValidationFailed(problems)
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
        return paginated_response(
            request=request,
            view=self,
            queryset=events,
            serialize=lambda page: UsageEventOutput(page, many=True, context={"request": request}).data,
            ordering="id",
        )

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

    @extend_schema(
        request=UsageEventUpdateInput,
        responses={
            200: UsageEventOutput,
            409: error_response("The schema change is not allowed (only new Nullable fields are); `errors` says why."),
        },
    )
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
