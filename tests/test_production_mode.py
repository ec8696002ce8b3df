"""Production mode as it is deployed: `DEBUG=0`, `zenskar_site.wsgi` under gunicorn behind a TLS-terminating
proxy (it sends `X-Forwarded-Proto: https`), a real Celery worker and a real beat process on Redis, not eager,
on PostgreSQL. Every other pass sets DEBUG=1; this one checks the HTTPS rules, HSTS and the worker's work
where a deployment has them.
"""

from __future__ import annotations

import datetime as dt
import http.cookies
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from django.utils import timezone

from metrics.models import BillableMetric
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.metrics.test_isolation import HOUR, PAIRS_PER_CUSTOMER, iso, metric_make, values_of
from tests.processes import (
    PRODUCTION_HOST,
    ROOT,
    celery_beat,
    celery_worker,
    gunicorn_production_server,
    https_request,
    process_env,
    production_env,
)
from usage.dirty import hours_mark_dirty
from usage.models import CsvImport, CsvImportStatus, UsageRecord
from zenskar_site.accounts.models import AuditEntry
from zenskar_site.celery import app

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

HSTS = "max-age=31536000; includeSubDomains; preload"
JSON = {"Content-Type": "application/json"}


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def usage_body(*records: tuple[str, dt.datetime]) -> bytes:
    return json.dumps(
        [
            {
                "customer_id": customer,
                "timestamp": iso(at),
                "data": {"cpu_usage_hours": 1},
                "idempotency_key": str(uuid.uuid4()),
            }
            for customer, at in records
        ]
    ).encode()


def total(metric: BillableMetric) -> int:
    return sum(int(v or 0) for v in values_of(metric).values())


@pytest.fixture
def queue_empty() -> None:
    """Tasks left in the queue by an earlier test (their rows flushed since) are not this test's."""
    app.control.purge()


def test_the_settings_pass_the_deployment_checklist(db: None) -> None:
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=process_env(**production_env()),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout


@pytest.mark.usefixtures("queue_empty")
def test_https_rules_and_hsts_on_the_fast_ingestion_route_and_the_dashboard() -> None:
    organisation = organisation_make()
    usage_event_make(organisation=organisation)
    secret = api_key_make(organisation=organisation, scope="ingest").secret
    moment = timezone.now() - dt.timedelta(minutes=2)
    ingest = {**JSON, "X-API-Key": secret}

    with gunicorn_production_server(workers=1, threads=2) as url:
        # Given the proxy's header, usage is accepted, stored and answered with HSTS
        status, headers, body = https_request(
            url, "POST", "/usage/compute_hours", body=usage_body(("a", moment)), headers=ingest
        )
        assert status == 202, body
        assert json.loads(body)["results"][0]["status"] == "accepted"
        assert headers["strict-transport-security"] == HSTS
        assert headers["x-content-type-options"] == "nosniff"
        assert UsageRecord.objects.count() == 1

        # Over plain HTTP (no proxy header, or the proxy saying http) usage is refused with a JSON 403
        # that says why, not redirected (a client would resend its POST as a GET), and nothing is stored
        for proxy_headers in ({}, {"X-Forwarded-Proto": "http"}):
            status, headers, body = https_request(
                url,
                "POST",
                "/usage/compute_hours",
                body=usage_body(("b", moment)),
                headers={**ingest, **proxy_headers},
                via_proxy=False,
            )
            assert status == 403, (proxy_headers, body)
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {
                "detail": "HTTPS is required: send usage to this URL with https://. Nothing was stored."
            }
            assert "strict-transport-security" not in headers  # HSTS is only sent over HTTPS
        assert UsageRecord.objects.count() == 1

        # A Host the deployment does not serve is a JSON 400 on the fast route, even over HTTPS
        status, _, body = https_request(
            url,
            "POST",
            "/usage/compute_hours",
            body=usage_body(("c", moment)),
            headers={**ingest, "Host": "evil.example"},
        )
        assert (status, json.loads(body)) == (400, {"detail": "Invalid Host header."})

        # The dashboard over plain HTTP is redirected to HTTPS; over HTTPS it asks to sign in, with HSTS
        status, headers, _ = https_request(url, "GET", "/usage-events/?page=2", via_proxy=False)
        assert (status, headers["location"]) == (301, f"https://{PRODUCTION_HOST}/usage-events/?page=2")
        status, headers, _ = https_request(url, "GET", "/usage-events/")
        assert (status, headers["location"]) == (302, "/login/?next=/usage-events/")
        assert headers["strict-transport-security"] == HSTS
        assert headers["x-frame-options"] == "DENY"
    assert UsageRecord.objects.count() == 1


@pytest.mark.usefixtures("queue_empty")
def test_the_worker_and_beat_keep_metrics_fresh_while_a_timing_out_sql_metric_fails_alone() -> None:
    # Given a usage event with a count metric and a SQL metric whose query is quadratic (far past the
    # 200 ms limit with 4000 records), and another organisation's count metric on its own usage event
    organisation, other = organisation_make(), organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    usage_event_make(organisation=other)
    calls = metric_make(organisation, "calls")
    pairs = metric_make(organisation, "pairs", sql=PAIRS_PER_CUSTOMER)
    other_calls = metric_make(other, "calls")
    secret, other_secret = (api_key_make(organisation=o).secret for o in (organisation, other))
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"c{i % 5}",
            timestamp=HOUR + dt.timedelta(seconds=i / 2),
            data={"cpu_usage_hours": 1},
            content_hash="x",
            received_at=HOUR,
        )
        for i in range(4000)
    )
    # Written behind the engine's back: only beat's sweep will find these hours.
    hours_mark_dirty(usage_event_id=usage_event.id, moments=[HOUR])
    app.control.purge()
    processes = production_env(METRIC_SQL_TIMEOUT_MS="200", METRICS_SWEEP_SECONDS="1")

    def send(key: str, customer: str, minutes: int) -> None:
        status, _, body = https_request(
            url,
            "POST",
            "/usage/compute_hours?backfill=true",
            body=usage_body((customer, HOUR + dt.timedelta(minutes=minutes))),
            headers={**JSON, "X-API-Key": key},
        )
        assert status == 202, body

    with (
        gunicorn_production_server(workers=1, threads=2, **processes) as url,
        celery_worker(**processes),
        celery_beat(**processes),
    ):
        # When records arrive over HTTPS for both organisations (nothing in this process runs a task)
        send(secret, "a", 30)
        send(other_secret, "a", 30)

        # Then the worker brings both count metrics up to date within seconds, while the SQL metric
        # has failed alone, with its error and a retry time
        assert wait_for(lambda: (total(calls), total(other_calls)) == (4001, 1), 20), (total(calls), total(other_calls))
        assert wait_for(lambda: BillableMetric.objects.get(id=pairs.id).recompute_state == "failed", 20)
        failed = BillableMetric.objects.get(id=pairs.id)
        assert failed.recompute_error == "sql: The query was stopped after 200 ms."
        assert failed.recompute_retry_at is not None
        assert failed.recompute_retry_at > timezone.now() - dt.timedelta(seconds=5)
        assert AuditEntry.objects.filter(action="metric.fail", object_id="pairs").exists()

        # and records that arrive after the failure are reflected in both within seconds, again
        send(secret, "b", 31)
        send(other_secret, "b", 31)
        assert wait_for(lambda: (total(calls), total(other_calls)) == (4002, 2), 20), (total(calls), total(other_calls))
    assert BillableMetric.objects.get(id=calls.id).recompute_state == "idle"
    assert BillableMetric.objects.get(id=other_calls.id).recompute_state == "idle"
    assert BillableMetric.objects.get(id=pairs.id).recompute_state == "failed"


class DashboardSession:
    """A signed-in browser without the browser: cookies, CSRF token and Origin, over the proxy's HTTPS."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = b""
        if method == "POST":
            boundary = uuid.uuid4().hex
            parts = [
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                for name, value in {"csrfmiddlewaretoken": self.cookies["csrftoken"], **(fields or {})}.items()
            ]
            for name, (filename, content) in (files or {}).items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: text/csv\r\n\r\n".encode()
                    + content
                    + b"\r\n"
                )
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers.update(
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Origin": f"https://{PRODUCTION_HOST}",
                    "Referer": f"https://{PRODUCTION_HOST}{path}",
                }
            )
        status, answer, content = https_request(self.url, method, path, body=body, headers=headers)
        for line in filter(None, answer.get("set-cookie", "").split("\n")):
            assert "Secure" in line, line  # production cookies never travel over plain HTTP
            for name, morsel in http.cookies.SimpleCookie(line).items():
                self.cookies[name] = morsel.value
        return status, answer, content.decode()


@pytest.mark.usefixtures("queue_empty")
def test_a_csv_import_confirmed_on_the_dashboard_is_run_by_the_worker_and_refreshes_a_metric() -> None:
    organisation = organisation_make(admin_email="ops@example.com", password="pw-123456")
    usage_event_make(organisation=organisation)
    calls = metric_make(organisation, "calls")
    moment = (timezone.now() - dt.timedelta(hours=1)).replace(microsecond=0)
    rows = [f"cus_{i % 3},{iso(moment + dt.timedelta(seconds=i))},{i}" for i in range(2500)]
    content = ("customer_id,timestamp,cpu_usage_hours\n" + "\n".join(rows) + "\n").encode()
    app.control.purge()
    processes = production_env()

    with gunicorn_production_server(workers=1, threads=2, **processes) as url, celery_worker(**processes):
        dashboard = DashboardSession(url)
        # Signed in over HTTPS, CSRF checked against the proxied Host and Origin (no CSRF_TRUSTED_ORIGINS)
        assert dashboard.request("GET", "/login/")[0] == 200
        status, headers, page = dashboard.request(
            "POST", "/login/", {"username": "ops@example.com", "password": "pw-123456"}
        )
        assert (status, headers.get("location")) == (302, "/"), page[:500]
        # Uploaded, mapped (as proposed), previewed and confirmed on the dashboard's pages
        status, headers, page = dashboard.request(
            "POST", "/usage-events/data/imports/", {"usage_event": "compute_hours"}, {"file": ("usage.csv", content)}
        )
        assert status == 302, page[:2000]
        import_id = int(re.fullmatch(r"/usage-events/data/imports/(\d+)/mapping/", headers["location"]).group(1))  # type: ignore[union-attr]
        mapping = {"column_0": "customer_id", "column_1": "timestamp", "column_2": "data.cpu_usage_hours"}
        status, headers, page = dashboard.request("POST", f"/usage-events/data/imports/{import_id}/mapping/", mapping)
        assert (status, headers.get("location")) == (302, f"/usage-events/data/imports/{import_id}/preview/"), page[
            :2000
        ]
        status, _, page = dashboard.request("GET", f"/usage-events/data/imports/{import_id}/preview/")
        assert status == 200
        assert f"/usage-events/data/imports/{import_id}/confirm/" in page
        status, headers, _ = dashboard.request("POST", f"/usage-events/data/imports/{import_id}/confirm/")
        assert (status, headers.get("location")) == (302, f"/usage-events/data/imports/{import_id}/")

        # Then the worker imports every row (this process runs no task) and refreshes the metric
        assert wait_for(lambda: CsvImport.objects.get(id=import_id).status == CsvImportStatus.DONE, 60), (
            CsvImport.objects.values("status", "rows_done", "errors").get(id=import_id)
        )
        assert UsageRecord.objects.count() == 2500
        assert wait_for(lambda: total(calls) == 2500, 20), total(calls)
        status, _, page = dashboard.request("GET", f"/usage-events/data/imports/{import_id}/")
        assert status == 200
        assert "2,500" in page or "2500" in page
    finished = CsvImport.objects.get(id=import_id)
    assert (finished.rows_done, finished.accepted, finished.rejected) == (2500, 2500, 0)
