"""What every billing endpoint shares: the JSON body, filtered cursor pages, decimal output."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.pagination import paginated_response
from zenskar_site.lib.text import unstorable_message


def body_object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed({"": ["Expected a JSON object."]})
    return dict(request.data)


def reason_of(body: dict[str, Any]) -> str:
    """The optional `reason` of a change (kept in the audit trail), taken out of the body."""
    reason = body.pop("reason", "") or ""
    if not isinstance(reason, str):
        raise ValidationFailed({"reason": ["Expected a string."]})
    if (problem := unstorable_message(reason)) is not None:
        raise ValidationFailed({"reason": [problem]})
    return reason


@extend_schema_field(OpenApiTypes.STR)
class DecimalText(serializers.Field):
    """A Decimal as its shortest exact string (`7.5`, not `7.5000`); null stays null."""

    def to_representation(self, value: Decimal) -> str:
        text = format(value.normalize(), "f")
        return text

    def to_internal_value(self, data: Any) -> Any:
        raise NotImplementedError  # output only: the services read input


class FilteredListApi(GenericAPIView):
    """GET: the filtered, cursor-paginated list. A bad filter value is a 400 naming the filter."""

    ordering = "-created_at"

    def list_response(self, request: Request, serialize: Callable[[list[Any]], Any]) -> Response:
        queryset: QuerySet[Any] = self.filter_queryset(self.get_queryset())
        return paginated_response(
            request=request, view=self, queryset=queryset, serialize=serialize, ordering=self.ordering
        )
