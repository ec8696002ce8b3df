"""The OpenAPI document's rules for every operation, in one place (settings' DEFAULT_SCHEMA_CLASS).

drf-spectacular documents what a view declares: its request body and its success answer. Everything
the API answers besides that comes from project-wide mechanisms (the exception handler, the NUL
middleware, authentication, throttling, pagination), so it is documented here, from the same facts
those mechanisms act on, and a new endpoint gets it without writing anything:

- a list (`responses=X(many=True)` on a GET, or a ListAPIView) is the cursor-paginated page
  `{"next", "previous", "results"}` with its `cursor` and `page_size` parameters, as
  `zenskar_site.lib.pagination` answers it;
- every operation lists the errors it can answer, each with the body `zenskar_site.lib.exceptions`
  writes (`Error`: `detail`, and `errors` per field for a 400); which ones is decided by
  `error_statuses` below. A view adds one that only it answers (a 409) with
  `extend_schema(responses={409: error_response("...")})`.

tests/test_openapi_conformance.py holds the document to the answers: schemathesis calls every
operation and fails on an undocumented status or a body that does not match.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from zenskar_site.lib.pagination import CursorPagination

# The component every error answer refers to; the ingestion endpoint's document uses it too.
ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person to read."},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "For invalid input: each field's path (`data.cpu_hours`, `filters[0].op`) and its messages.",
        },
    },
    "required": ["detail"],
}
RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}
}

ERROR_DESCRIPTIONS = {
    400: "Invalid input (a field, a filter, a cursor, a NUL in the URL): `detail` says why, `errors` names each field.",
    401: "No API key, or a key that is unknown or revoked.",
    403: "The key's scope or the member's role does not allow this, or the `organisation` header is not the key's.",
    404: "Nothing with that identifier in this organisation.",
    406: "The `Accept` header asks for something other than JSON.",
    415: "The body is not JSON (`Content-Type: application/json`).",
    429: "Over the organisation's rate limit; retry after `Retry-After` seconds.",
    503: "The database is unavailable; nothing was stored. Retry after `Retry-After` seconds.",
}


class Error(serializers.Serializer[Any]):
    """Every error answer: `detail`, and for invalid input `errors`, each field's path and its messages."""

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # `errors` is added here: as a class attribute it would hide the Serializer's own `errors`.
        fields = dict(super().get_fields())
        fields["errors"] = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            required=False,
            help_text="For invalid input: each field's path (`data.cpu_hours`, `filters[0].op`) and its messages.",
        )
        return fields


def error_response(description: str) -> OpenApiResponse:
    """An error answer a view declares itself, e.g. `extend_schema(responses={..., 409: error_response("...")})`."""
    return OpenApiResponse(response=Error, description=description)


class AutoSchema(openapi.AutoSchema):
    def _get_paginator(self) -> Any:
        # Plain APIViews page through `paginated_response` (the one CursorPagination) without a
        # pagination_class attribute; drf-spectacular would document their lists as bare arrays.
        paginator = super()._get_paginator()
        if paginator is None and self.method == "GET":
            return CursorPagination()
        return paginator

    def error_statuses(self) -> list[int]:
        """The errors any request to this operation can meet, from the mechanisms that answer them."""
        statuses = [400, 406]  # every path and query is checked for a NUL; DRF negotiates the answer's type
        protected = any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions())
        if protected:
            statuses += [401, 403, 503]
        if "{" in self.path or self._is_list_view():
            statuses.append(404)  # an unknown identifier, or a cursor DRF cannot decode
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.append(415)
        if protected and self.view.get_throttles():
            statuses.append(429)
        return sorted(statuses)

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status in self.error_statuses():
            if str(status) in responses:
                continue
            response = self._get_response_for_code(
                OpenApiResponse(response=Error, description=ERROR_DESCRIPTIONS[status]),
                str(status),
                media_types=["application/json"],
                direction=direction,
            )
            if status in (429, 503):
                response["headers"] = dict(RETRY_AFTER)
            responses[str(status)] = response
        return responses
