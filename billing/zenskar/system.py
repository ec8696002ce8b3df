"""Zenskar's `GET /system/datetime`: the server's clock, so a client can align its ranges with it."""

from __future__ import annotations

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from billing.zenskar.common import ZenskarApi


class SystemDatetimeApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        now = timezone.now()
        return Response(
            {
                "datetime": now.isoformat().replace("+00:00", "Z"),
                "timestamp": int(now.timestamp()),
                "timezone": "UTC",
            }
        )
