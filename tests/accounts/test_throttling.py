"""Throttling: sign-in attempts per account and address, the management API per organisation, and the
ingestion limiter when Redis is down."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle, api_key_make, organisation_admin, organisation_make
from usage.models import UsageEvent, UsageRecord
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib import ratelimit

PASSWORD = "correct-horse-battery"
HERE = "203.0.113.9"
ELSEWHERE = "198.51.100.7"
PROXY = "10.0.0.2"
# The defaults of LOGIN_FAILURE_LIMIT and LOGIN_LOCKOUT_SECONDS.
LIMIT = 5
COOL_OFF = dt.timedelta(minutes=15)

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _fresh_rate_limiter() -> Iterator[None]:
    ratelimit.rate_limit_reset()
    yield
    ratelimit.rate_limit_reset()


def in_one_window(action: Callable[[], T]) -> T:
    """Run `action` within one of the limiter's one-second windows (starting at a second's edge)."""
    for _ in range(5):
        time.sleep(1.0 - time.time() % 1.0)
        started = int(time.time())
        result = action()
        if int(time.time()) == started:
            return result
    pytest.fail("five tries to fit the requests in one second all overran it")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


# --- sign-in attempts, per account and address ---


@pytest.fixture
def ada(db: None) -> User:
    return organisation_admin(organisation_make(name="Acme", admin_email="ada@acme.test", password=PASSWORD))


@pytest.fixture
def bob(db: None) -> User:
    return organisation_admin(organisation_make(name="Globex", admin_email="bob@globex.test", password=PASSWORD))


class Attempt(NamedTuple):
    status_code: int
    signed_in: bool
    response: Any


def sign_in(username: str, password: str, **meta: str) -> Attempt:
    """One POST to the dashboard's sign-in page, from the address (and headers) in `meta`."""
    client = Client()
    response = client.post("/login/", {"username": username, "password": password}, **meta)
    return Attempt(response.status_code, "_auth_user_id" in client.session, response)


def fail_until_locked(username: str, **meta: str) -> list[int]:
    """LIMIT + 1 wrong passwords: the last failure locks, the next attempt is refused."""
    return [sign_in(username, "wrong-password", **meta).status_code for _ in range(LIMIT + 1)]


def access_attempts() -> Any:
    # Imported here: before django-axes was installed, this module's other tests failed on their own.
    from axes.models import AccessAttempt

    return AccessAttempt.objects


@pytest.fixture
def direct(settings: Any) -> None:
    """As in embedded mode: no proxy, the connection's address is the client's."""
    settings.TRUSTED_PROXY_COUNT = 0


def test_wrong_passwords_lock_the_account_for_that_address_even_for_the_right_password(ada: User, direct: None) -> None:
    statuses = fail_until_locked("ada@acme.test", REMOTE_ADDR=HERE)
    right_password = sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=HERE)

    # The sign-in page again for the first four; the fifth failure locks, so it and the sixth get the lockout page.
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert right_password.status_code == 429
    assert not right_password.signed_in
    page = right_password.response.content.decode()
    assert "Too many sign-in attempts" in page
    assert "after 5 failed attempts" in page
    assert "Try again in 15 minutes" in page
    assert {"registration/locked_out.html", "base.html"} <= {t.name for t in right_password.response.templates}
    assert "/static/zenskar/app.css" in page


def test_a_locked_account_still_signs_in_from_another_address(ada: User, direct: None) -> None:
    fail_until_locked("ada@acme.test", REMOTE_ADDR=HERE)

    assert sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=HERE).status_code == 429
    elsewhere = sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=ELSEWHERE)
    assert elsewhere.status_code == 302
    assert elsewhere.signed_in


def test_another_account_still_signs_in_from_a_locked_address(ada: User, bob: User, direct: None) -> None:
    fail_until_locked("ada@acme.test", REMOTE_ADDR=HERE)

    assert sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=HERE).status_code == 429
    other_account = sign_in("bob@globex.test", PASSWORD, REMOTE_ADDR=HERE)
    assert other_account.status_code == 302
    assert other_account.signed_in


def test_the_lockout_ends_after_the_cool_off(ada: User, direct: None) -> None:
    fail_until_locked("ada@acme.test", REMOTE_ADDR=HERE)
    assert sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=HERE).status_code == 429

    access_attempts().update(attempt_time=timezone.now() - COOL_OFF - dt.timedelta(seconds=1))

    assert sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=HERE).signed_in


def test_behind_the_proxy_an_address_the_client_writes_does_not_escape_the_lockout(ada: User, settings: Any) -> None:
    """The proxy appends the address it saw to X-Forwarded-For; the client may have sent the header too."""
    settings.TRUSTED_PROXY_COUNT = 1

    statuses = [
        sign_in(
            "ada@acme.test", "wrong-password", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, {HERE}"
        ).status_code
        for n in range(LIMIT + 3)
    ]
    spoofed = sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{ELSEWHERE}, {HERE}")
    real_elsewhere = sign_in("ada@acme.test", PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=ELSEWHERE)

    assert statuses == [200] * (LIMIT - 1) + [429] * 4
    assert spoofed.status_code == 429
    assert real_elsewhere.signed_in
    assert set(access_attempts().values_list("ip_address", flat=True)) == {HERE}


# --- the management API, per organisation ---


@pytest.fixture
def globex_key(other_organisation: Organisation) -> ApiKeyBundle:
    return api_key_make(organisation=other_organisation, scope="full")


def test_over_the_api_rate_limit_is_429_with_retry_after_and_a_json_detail(api: APIClient, settings: Any) -> None:
    settings.API_RATE_LIMIT = 3

    responses = in_one_window(lambda: [api.get("/api/v1/organisation/") for _ in range(4)])

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    limited = responses[-1]
    assert limited["Retry-After"] == "1"
    assert limited["Content-Type"].startswith("application/json")
    assert json.loads(limited.content) == {
        "detail": "Over the organisation's API rate limit. Expected available in 1 second."
    }


def test_the_openapi_document_and_docs_are_not_throttled(settings: Any) -> None:
    settings.API_RATE_LIMIT = 1

    statuses = [APIClient().get(url).status_code for url in ["/api/v1/schema/"] * 2 + ["/api/v1/docs/"] * 3]

    assert statuses == [200] * 5


def test_another_organisation_keeps_its_own_api_budget(
    api: APIClient, globex_key: ApiKeyBundle, client_for: Any, settings: Any
) -> None:
    settings.API_RATE_LIMIT = 2
    globex = client_for(globex_key.secret)

    def burst() -> tuple[list[int], list[int]]:
        acme = [api.get("/api/v1/organisation/").status_code for _ in range(3)]
        return acme, [globex.get("/api/v1/organisation/").status_code for _ in range(2)]

    acme, other = in_one_window(burst)

    assert acme == [200, 200, 429]
    assert other == [200, 200]


def test_a_signed_in_user_shares_the_budget_of_the_organisation_it_works_in(
    api: APIClient, organisation: Organisation, settings: Any
) -> None:
    settings.API_RATE_LIMIT = 2
    dashboard = APIClient()
    dashboard.force_login(organisation_admin(organisation))

    def burst() -> list[int]:
        return [api.get("/api/v1/organisation/").status_code for _ in range(2)] + [
            dashboard.get("/api/v1/organisation/").status_code
        ]

    assert in_one_window(burst) == [200, 200, 429]


# --- the ingestion limiter when Redis is down ---


def ingest_one(client: APIClient, *, customer_id: str) -> Any:
    timestamp = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    record = {"customer_id": customer_id, "timestamp": timestamp, "data": {"cpu_usage_hours": 5}}
    return client.post("/usage/compute_hours", data=json.dumps(record), content_type="application/json")


def test_ingestion_goes_on_when_redis_is_down_and_each_process_still_enforces_the_limit(
    ingest_key: ApiKeyBundle,
    client_for: Any,
    compute_hours: UsageEvent,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.REDIS_URL = closed_port_url()
    settings.INGEST_RATE_LIMIT = 3
    client = client_for(ingest_key.secret)
    caplog.set_level(logging.WARNING, logger="zenskar_site.lib.ratelimit")
    bursts = iter(range(100))

    def burst() -> tuple[str, list[int]]:
        customer_id = f"cus_{next(bursts)}"  # a retried burst stores under another customer
        return customer_id, [ingest_one(client, customer_id=customer_id).status_code for _ in range(5)]

    customer_id, statuses = in_one_window(burst)

    assert statuses == [202, 202, 202, 429, 429]
    assert UsageRecord.objects.filter(customer_id=customer_id).count() == 3
    warnings = [r for r in caplog.records if r.name == "zenskar_site.lib.ratelimit"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "cannot reach Redis" in warnings[0].getMessage()


def test_the_redis_down_warning_is_logged_once_not_per_request(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = closed_port_url()
    monkeypatch.setattr(ratelimit, "REDIS_RETRY_SECONDS", 0.0)  # every request tries Redis again
    caplog.set_level(logging.WARNING, logger="zenskar_site.lib.ratelimit")

    answers = [ratelimit.rate_limit_retry_after(organisation_id="acme", now=1000.5, limit=1000) for _ in range(50)]

    assert answers == [None] * 50
    assert len([r for r in caplog.records if r.name == "zenskar_site.lib.ratelimit"]) == 1


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: runs in the PostgreSQL + Redis pass")
def test_once_redis_is_back_the_count_is_shared_again(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reachable = settings.REDIS_URL
    monkeypatch.setattr(ratelimit, "REDIS_RETRY_SECONDS", 0.0)
    caplog.set_level(logging.WARNING, logger="zenskar_site.lib.ratelimit")
    organisation_id = f"back-{time.time_ns()}"
    now = time.time()

    settings.REDIS_URL = closed_port_url()
    down = [ratelimit.rate_limit_retry_after(organisation_id=organisation_id, now=now, limit=2) for _ in range(2)]
    settings.REDIS_URL = reachable
    back = [ratelimit.rate_limit_retry_after(organisation_id=organisation_id, now=now, limit=2) for _ in range(3)]

    assert down == [None, None]
    # Redis never saw the two counted in memory: its own count starts again.
    assert back == [None, None, 1]
    messages = [r.getMessage() for r in caplog.records if r.name == "zenskar_site.lib.ratelimit"]
    assert len(messages) == 2
    assert "reaches Redis again" in messages[1]


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: runs in the PostgreSQL + Redis pass")
def test_processes_lease_the_shared_budget_and_together_never_admit_more_than_the_limit(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes (two limiter states) on one Redis: each takes growing leases of the window's budget,
    so a busy process asks Redis a few times, not once per request, and the two together stop at the limit."""
    organisation_id = f"lease-{time.time_ns()}"
    now = time.time()
    leases: list[int] = []
    real_lease = ratelimit._redis_lease

    def counted_lease(key: str, *, size: int, limit: int) -> int | None:
        leases.append(size)
        return real_lease(key, size=size, limit=limit)

    monkeypatch.setattr(ratelimit, "_redis_lease", counted_lease)
    first, second = ratelimit._Fallback(), ratelimit._Fallback()

    def admitted_by(state: ratelimit._Fallback, requests: int, *, at: float = now) -> int:
        monkeypatch.setattr(ratelimit, "_fallback", state)
        answers = [
            ratelimit.rate_limit_retry_after(organisation_id=organisation_id, now=at, limit=100)
            for _ in range(requests)
        ]
        return answers.count(None)

    assert admitted_by(first, 60) == 60
    first_round_trips = len(leases)
    # Leases of 1, 2, 4, then 5 (the limit's 1/20) each: 14 round trips for 60 requests, 62 leased.
    assert first_round_trips == 14
    shared = ratelimit._redis(settings.REDIS_URL)
    assert int(shared.get(f"ratelimit:ingest:{organisation_id}:{int(now)}")) == 62
    # The other process gets what is left (38), then 429s; the 2 the first still holds are not given twice.
    assert admitted_by(second, 60) == 38
    assert admitted_by(first, 5) == 2
    # The next second, a steady process starts with the lease size it ended with; one quiet second resets it.
    leases.clear()
    assert admitted_by(first, 1, at=now + 1) == 1
    assert admitted_by(first, 1, at=now + 3) == 1
    assert leases == [5, 1]
