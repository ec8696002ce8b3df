"""The one pagination of the management API: DRF's cursor pagination (one opaque cursor format)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from rest_framework import pagination
from rest_framework.request import Request
from rest_framework.response import Response


class CursorPagination(pagination.CursorPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "-id"


def paginated_response(
    *,
    request: Request,
    view: Any,
    queryset: QuerySet[Any],
    serialize: Callable[[list[Any]], Any],
    ordering: str = "-id",
) -> Response:
    """One page of `queryset` in `ordering`, serialized, with the next and previous cursors."""
    paginator = CursorPagination()
    paginator.ordering = ordering
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serialize(page or []))
