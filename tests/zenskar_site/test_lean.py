"""The lean WSGI route for POST /usage/{slug} answers exactly as the Django view does."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import ApiKeyBundle
from usage.models import UsageEvent, UsageRecord
from zenskar_site.wsgi import application

MOMENT = (timezone.now() - dt.timedelta(minutes=3)).isoformat()


def call(path: str, body: bytes, **headers: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": headers.pop("QUERY_STRING", ""),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": headers.pop("HTTP_HOST", "testserver"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": headers.pop("CONTENT_TYPE", "application/json"),
        **headers,
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, pairs: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(pairs)

    content = b"".join(application(environ, start_response))
    return seen["status"], seen["headers"], json.loads(content)


@pytest.mark.django_db(transaction=True)
def test_the_lean_route_stores_and_answers_like_the_view(ingest_key: ApiKeyBundle, compute_hours: UsageEvent) -> None:
    record = {"customer_id": "a", "timestamp": MOMENT, "data": {"cpu_usage_hours": 2}, "idempotency_key": "k"}

    status, headers, body = call("/usage/compute_hours", json.dumps(record).encode(), HTTP_X_API_KEY=ingest_key.secret)
    again = Client().post(
        "/usage/compute_hours",
        data=json.dumps(record),
        content_type="application/json",
        HTTP_X_API_KEY=ingest_key.secret,
    )

    assert status == "202 Accepted"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert body["results"][0]["status"] == "accepted"
    assert again.json()["results"][0] == {"index": 0, "status": "duplicate", "id": body["results"][0]["id"]}
    assert UsageRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/usage/compute_hours", b"{}", {"HTTP_HOST": "evil.example.com"}, "400 Bad Request"),
        ("/usage/compute_hours", b"{}", {}, "401 Unauthorized"),
        ("/usage/nope", b"{}", {"key": ""}, "404 Not Found"),
        ("/usage/compute_hours", b"{nope", {"key": ""}, "400 Bad Request"),
        ("/usage/compute_hours", b"{}", {"key": "", "CONTENT_TYPE": "text/csv"}, "415 Unsupported Media Type"),
        ("/usage/compute_hours/", b"{}", {"key": ""}, "422 Unprocessable Content"),
    ],
)
def test_the_lean_route_answers_errors_with_json(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, path: str, body: bytes, headers: dict[str, str], status: str
) -> None:
    if "key" in headers:
        headers.pop("key")
        headers["HTTP_X_API_KEY"] = ingest_key.secret
    got, _, payload = call(path, body, **headers)
    assert got == status
    assert payload.get("detail") or payload.get("results")
    assert not UsageRecord.objects.exists()
