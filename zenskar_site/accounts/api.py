"""Management API for the organisation, API keys and the audit trail."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from zenskar_site.accounts.models import ApiKey, ApiKeyScope, AuditEntry, Organisation
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.accounts.selectors import api_keys_list, audit_entries_list
from zenskar_site.accounts.services import api_key_create, api_key_revoke
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.pagination import paginated_response


class OrganisationOutput(serializers.ModelSerializer[Organisation]):
    class Meta:
        model = Organisation
        fields = ["id", "name"]


class OrganisationApi(APIView):
    @extend_schema(responses=OrganisationOutput)
    def get(self, request: Request) -> Response:
        return Response(OrganisationOutput(request_actor(request).organisation).data)


class ApiKeyOutput(serializers.ModelSerializer[ApiKey]):
    class Meta:
        model = ApiKey
        fields = ["prefix", "name", "scope", "created_at", "last_used_at"]


class ApiKeyCreatedOutput(ApiKeyOutput):
    key = serializers.CharField(help_text="The whole secret. Shown in this answer only.")

    class Meta(ApiKeyOutput.Meta):
        fields = [*ApiKeyOutput.Meta.fields, "key"]


class ApiKeyCreateInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=ApiKeyScope.choices)


class ApiKeyListApi(APIView):
    @extend_schema(responses=ApiKeyOutput(many=True))
    def get(self, request: Request) -> Response:
        actor = request_actor(request)
        return paginated_response(
            request=request,
            view=self,
            queryset=api_keys_list(organisation=actor.organisation),
            serialize=lambda page: ApiKeyOutput(page, many=True).data,
        )

    @extend_schema(request=ApiKeyCreateInput, responses={201: ApiKeyCreatedOutput})
    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        if not isinstance(request.data, dict):
            raise ValidationFailed({"": ["Expected a JSON object."]})
        api_key, secret = api_key_create(
            actor=actor, name=request.data.get("name", ""), scope=request.data.get("scope", "")
        )
        data = dict(ApiKeyOutput(api_key).data)
        data["key"] = secret
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, prefix: str) -> Response:
        api_key_revoke(actor=request_actor(request), prefix=prefix)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEntryOutput(serializers.ModelSerializer[AuditEntry]):
    class Meta:
        model = AuditEntry
        fields = ["id", "at", "actor", "action", "object_type", "object_id", "before", "after", "reason"]


class AuditFilter(django_filters.FilterSet):
    object_type = django_filters.CharFilter()
    object_id = django_filters.CharFilter()
    actor = django_filters.CharFilter()
    action = django_filters.CharFilter()

    class Meta:
        model = AuditEntry
        fields = ["object_type", "object_id", "actor", "action"]


class AuditListApi(ListAPIView[AuditEntry]):
    serializer_class = AuditEntryOutput
    filterset_class = AuditFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return AuditEntry.objects.none()
        return audit_entries_list(organisation=request_actor(self.request).organisation)
