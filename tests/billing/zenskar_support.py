"""Helpers of the Zenskar-compatible API's tests: a client that talks as Zenskar's clients do (paths
without a trailing slash, `x-api-key` with the `organisation` and `apiversion` headers, JSON bodies)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.test import Client
from django.utils import timezone

from tests.factories import ApiKeyBundle

SCHEMA = {
    "customer_id": "String",
    "timestamp": "DateTime64",
    "data": {"cpu_usage_hours": "Float64", "region": "Nullable(String)"},
}


class ZenskarClient:
    """Django's test client with Zenskar's headers; every answer's JSON is at `.json()`."""

    def __init__(self, key: ApiKeyBundle) -> None:
        self.client = Client()
        self.headers = {
            "HTTP_X_API_KEY": key.secret,
            "HTTP_ORGANISATION": str(key.api_key.organisation_id),
            "HTTP_APIVERSION": "20240301",
        }

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.get(path, params or {}, **self.headers)

    def get_with_body(self, path: str, body: Any) -> Any:
        return self.client.generic("GET", path, json.dumps(body), content_type="application/json", **self.headers)

    def send(self, method: str, path: str, body: Any = None) -> Any:
        data = "" if body is None else body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.generic(method, path, data, content_type="application/json", **self.headers)

    def post(self, path: str, body: Any = None) -> Any:
        return self.send("POST", path, body)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.send("PATCH", path, body)

    def put(self, path: str, body: Any = None) -> Any:
        return self.send("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.send("DELETE", path)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def days_ago(days: int) -> dt.datetime:
    """UTC midnight `days` days before today."""
    today = timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=days)


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, (response.status_code, response.content[:2000])
    body: dict[str, Any] = response.json()
    assert body["id"]
    return body
