"""The fast WSGI route for POST /usage/{slug} answers exactly as Django's full stack does."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from tests.factories import ApiKeyBundle
from usage.ingestion import http as ingest_http
from usage.ingestion import wsgi as ingest_wsgi
from usage.models import UsageEvent, UsageRecord
from zenskar_site.accounts.models import ApiKey
from zenskar_site.wsgi import application

MOMENT = (timezone.now() - dt.timedelta(minutes=3)).isoformat()
SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "X-Frame-Options",
)


def fast(path: str, body: bytes, **headers: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """One request through zenskar_site.wsgi.application, which sends POST /usage/* to the fast route."""
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


def full_stack(path: str, body: bytes, **headers: str) -> tuple[int, dict[str, str]]:
    """The same request through Django's whole middleware stack and URLconf (the `ingest` view)."""
    response = Client().post(
        path, data=body, content_type=headers.pop("CONTENT_TYPE", "application/json"), secure=False, **headers
    )
    return response.status_code, dict(response.items())


def record(key: str) -> bytes:
    return json.dumps(
        {"customer_id": "a", "timestamp": MOMENT, "data": {"cpu_usage_hours": 2}, "idempotency_key": key}
    ).encode()


@pytest.mark.django_db(transaction=True)
def test_the_fast_route_stores_and_answers_like_the_view(ingest_key: ApiKeyBundle, compute_hours: UsageEvent) -> None:
    status, headers, body = fast("/usage/compute_hours", record("k"), HTTP_X_API_KEY=ingest_key.secret)
    again = Client().post(
        "/usage/compute_hours", data=record("k"), content_type="application/json", HTTP_X_API_KEY=ingest_key.secret
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
        ("/usage/compute_hours", b"{}", {"HTTP_HOST": "evil.example.com"}, 400),
        ("/usage/compute_hours", b"{}", {}, 401),
        ("/usage/nope", b"{}", {"key": ""}, 404),
        ("/usage/compute_hours", b"{nope", {"key": ""}, 400),
        ("/usage/compute_hours", b"{}", {"key": "", "CONTENT_TYPE": "text/csv"}, 415),
        ("/usage/compute_hours/", b"{}", {"key": ""}, 422),
    ],
)
def test_the_fast_route_answers_errors_with_json(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    if "key" in headers:
        headers.pop("key")
        headers["HTTP_X_API_KEY"] = ingest_key.secret
    got, _, payload = fast(path, body, **headers)
    assert int(got.split()[0]) == status
    assert payload.get("detail") or payload.get("results")
    assert not UsageRecord.objects.exists()


PRODUCTION_SECURITY = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["metering.example.com"],
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("case", "headers", "status"),
    [
        ("bad Host header", {"HTTP_HOST": "evil.example.com", "HTTP_X_FORWARDED_PROTO": "https"}, 400),
        ("plain HTTP, no proxy header", {"HTTP_HOST": "metering.example.com"}, 403),
        ("plain HTTP said by the proxy", {"HTTP_HOST": "metering.example.com", "HTTP_X_FORWARDED_PROTO": "http"}, 403),
        ("a good request over HTTPS", {"HTTP_HOST": "metering.example.com", "HTTP_X_FORWARDED_PROTO": "https"}, 202),
        ("no key over HTTPS", {"HTTP_HOST": "metering.example.com", "HTTP_X_FORWARDED_PROTO": "https"}, 401),
    ],
)
def test_the_fast_route_and_djangos_full_stack_agree_on_status_and_security_headers(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, case: str, headers: dict[str, str], status: int
) -> None:
    key = {} if case.startswith("no key") else {"HTTP_X_API_KEY": ingest_key.secret}
    with override_settings(**PRODUCTION_SECURITY):
        fast_status, fast_headers, _ = fast("/usage/compute_hours", record("fast"), **headers, **key)
        django_status, django_headers = full_stack("/usage/compute_hours", record("django"), **headers, **key)

    assert int(fast_status.split()[0]) == django_status == status, case
    for name in SECURITY_HEADERS:
        assert fast_headers.get(name) == django_headers.get(name), (case, name)
    assert fast_headers["Content-Type"] == "application/json"  # Django's own 400 for a bad Host is HTML
    if status == 202:
        assert fast_headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert UsageRecord.objects.count() == (2 if status == 202 else 0)


@pytest.fixture
def general_path(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The API slugs of the requests the fast route handed to the general path (`ingest_answer`)."""
    seen: list[str] = []
    original = ingest_wsgi.ingest_answer

    def spy(request: Any, *, api_slug: str) -> Any:
        seen.append(api_slug)
        return original(request, api_slug=api_slug)

    monkeypatch.setattr(ingest_wsgi, "ingest_answer", spy)
    return seen


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The organisations of the requests counted against the rate limit, which admits them all."""
    seen: list[object] = []

    def count(*, organisation_id: object, now: float) -> int | None:
        seen.append(organisation_id)
        return None

    monkeypatch.setattr(ingest_http, "rate_limit_retry_after", count)
    return seen


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_plain_case_is_answered_without_the_general_path_and_alike(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, general_path: list[str], counted: list[object]
) -> None:
    first = fast("/usage/compute_hours", record("first"), HTTP_X_API_KEY=ingest_key.secret)  # caches the key
    assert general_path == ["compute_hours"]

    plain = fast("/usage/compute_hours", record("second"), HTTP_X_API_KEY=ingest_key.secret)
    repeated = fast("/usage/compute_hours", record("second"), HTTP_X_API_KEY=ingest_key.secret)
    reused = fast(
        "/usage/compute_hours",
        record("second").replace(b'"customer_id": "a"', b'"customer_id": "b"'),
        HTTP_X_API_KEY=ingest_key.secret,
    )

    assert general_path == ["compute_hours"]  # none of these three took the general path
    stored = dict(UsageRecord.objects.values_list("idempotency_key", "id"))
    assert plain[0] == first[0] == "202 Accepted"
    assert plain[1] == first[1]  # the same headers, Content-Length included (ids of one length here)
    assert plain[2] == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"index": 0, "status": "accepted", "id": stored["second"]}],
    }
    # A key already taken: the plain write stores nothing, and the answer comes from the stored record.
    assert repeated[0] == "202 Accepted"
    assert repeated[2]["results"] == [{"index": 0, "status": "duplicate", "id": stored["second"]}]
    assert reused[0] == "422 Unprocessable Entity"
    assert "already used for record" in reused[2]["results"][0]["errors"]["idempotency_key"][0]
    assert len(stored) == 2
    assert len(counted) == 4  # each request counted once against the rate limit


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_what_is_not_the_plain_case_goes_to_the_general_path_counted_once(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, general_path: list[str], counted: list[object]
) -> None:
    fast("/usage/compute_hours", record("first"), HTTP_X_API_KEY=ingest_key.secret)  # caches the key
    invalid = fast("/usage/compute_hours", b'{"customer_id": "a"}', HTTP_X_API_KEY=ingest_key.secret)
    batch = fast("/usage/compute_hours", b"[" + record("in-a-batch") + b"]", HTTP_X_API_KEY=ingest_key.secret)
    wrong_key = fast("/usage/compute_hours", record("wrong"), HTTP_X_API_KEY=ingest_key.secret[:-2] + "xx")
    backfill = fast("/usage/compute_hours", record("q"), HTTP_X_API_KEY=ingest_key.secret, QUERY_STRING="backfill=1")

    assert general_path == ["compute_hours"] * 5
    assert invalid[0].startswith("422")
    assert invalid[2]["rejected"] == 1
    assert batch[0].startswith("202")
    assert batch[2]["accepted"] == 1
    assert wrong_key[0].startswith("401")
    assert backfill[0].startswith("403")  # an ingest-scope key may not backfill
    # Once each, as the general path counts them: all but the refused key (refused before the count).
    assert len(counted) == 4
    assert set(UsageRecord.objects.values_list("idempotency_key", flat=True)) == {"first", "in-a-batch"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_plain_case_answers_the_rate_limit_and_a_revoked_key_as_the_general_path_does(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, general_path: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast("/usage/compute_hours", record("first"), HTTP_X_API_KEY=ingest_key.secret)  # caches the key
    monkeypatch.setattr(ingest_http, "rate_limit_retry_after", lambda **kwargs: 1)
    limited = fast("/usage/compute_hours", record("limited"), HTTP_X_API_KEY=ingest_key.secret)
    monkeypatch.undo()
    ApiKey.objects.filter(prefix=ingest_key.api_key.prefix).update(revoked_at=timezone.now())
    revoked = fast("/usage/compute_hours", record("revoked"), HTTP_X_API_KEY=ingest_key.secret)

    assert limited[0] == "429 Too Many Requests"
    assert limited[1]["Retry-After"] == "1"
    assert limited[2] == {"detail": "Over the organisation's rate limit; retry later."}
    # The cached key passes the plain case's check; the write's guard finds it revoked and writes nothing.
    assert revoked[0] == "401 Unauthorized"
    assert revoked[2] == {"detail": "This API key has been revoked."}
    assert set(UsageRecord.objects.values_list("idempotency_key", flat=True)) == {"first"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_plain_case_keeps_the_host_and_https_rules_of_the_request_it_answers(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, general_path: list[str]
) -> None:
    def send(
        key: str, *, host: str = "metering.example.com", proto: str = "https"
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        return fast(
            "/usage/compute_hours",
            record(key),
            HTTP_X_API_KEY=ingest_key.secret,
            HTTP_HOST=host,
            HTTP_X_FORWARDED_PROTO=proto,
        )

    with override_settings(**PRODUCTION_SECURITY):
        send("first")
        secure = send("secure")
        plain_http = send("plain-http", proto="http")
        other_host = send("other-host", host="evil.example.com")

    # The first, and the one over plain HTTP (ingest_answer's 403); the second over HTTPS was the plain case.
    assert general_path == ["compute_hours", "compute_hours"]
    assert secure[0] == "202 Accepted"
    assert secure[1]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert secure[1]["X-Frame-Options"] == "DENY"
    assert plain_http[0] == "403 Forbidden"
    assert other_host[0] == "400 Bad Request"
    assert set(UsageRecord.objects.values_list("idempotency_key", flat=True)) == {"first", "secure"}
