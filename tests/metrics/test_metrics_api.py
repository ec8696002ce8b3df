"""SPEC §4/§5: metrics through the API, values kept fresh by the engine, recomputation, reconcile."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any, NoReturn

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from metrics.engine.refresh import metric_recompute, metric_values_refresh
from metrics.models import BillableMetric, MetricValue
from metrics.sandbox import SandboxError
from tests.factories import ApiKeyBundle, api_key_make, usage_event_make
from usage.models import DirtyBucket, UsageEvent, UsageRecord
from zenskar_site.accounts.models import AuditEntry, Organisation

HOUR = (timezone.now() - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def send(client: APIClient, records: list[dict[str, Any]], slug: str = "compute_hours", backfill: bool = False) -> Any:
    url = f"/usage/{slug}" + ("?backfill=true" if backfill else "")
    return client.post(url, data=json.dumps(records), content_type="application/json")


def rec(customer: str, minutes: float, hours: float, region: str | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"cpu_usage_hours": hours}
    if region is not None:
        data["region"] = region
    return {"customer_id": customer, "timestamp": iso(HOUR + dt.timedelta(minutes=minutes)), "data": data, **extra}


def values_of(metric_slug: str) -> dict[tuple[str, str, str], str | None]:
    return {
        (v.customer_id, iso(v.period_start), v.dimension_key): v.value
        for v in MetricValue.objects.filter(metric__slug=metric_slug)
    }


@pytest.fixture
def pusher(full_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent) -> APIClient:
    return client_for(full_key.secret)


def create(api: APIClient, **body: Any) -> Any:
    payload = {
        "name": "CPU",
        "slug": "cpu",
        "usage_event": "compute_hours",
        "aggregation": "sum",
        "field": "cpu_usage_hours",
        "granularity": "hour",
        **body,
    }
    return api.post("/api/v1/metrics/", payload, format="json")


def test_a_new_metric_computes_existing_history(
    api: APIClient, pusher: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 5, 1.5), rec("a", 10, 2.25), rec("b", 65, 4)])

    with django_capture_on_commit_callbacks(execute=True):
        response = create(api)

    assert response.status_code == 201, response.json()
    assert response.json()["version"] == 1
    assert values_of("cpu") == {
        ("a", iso(HOUR), ""): "3.75",
        ("b", iso(HOUR + dt.timedelta(hours=1)), ""): "4",
    }
    assert BillableMetric.objects.get(slug="cpu").recompute_state == "idle"


def test_ingested_records_are_reflected_after_a_refresh_and_a_rerun_changes_nothing(
    api: APIClient, pusher: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        create(api, group_by=["region"])
    send(pusher, [rec("a", 1, 1, "eu"), rec("a", 2, 2, "us"), rec("a", 3, 3, "eu")])

    metric_values_refresh(usage_event_id=compute_hours.id)
    first = values_of("cpu")
    metric_values_refresh(usage_event_id=compute_hours.id)

    assert first == {
        ("a", iso(HOUR), '{"region":"eu"}'): "4",
        ("a", iso(HOUR), '{"region":"us"}'): "2",
    }
    assert values_of("cpu") == first
    assert not DirtyBucket.objects.exists()


def test_late_records_land_in_old_buckets(
    api: APIClient, pusher: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        create(api, granularity="day", aggregation="count", field="")
    old_day = (HOUR - dt.timedelta(days=3)).replace(hour=12)
    send(pusher, [{"customer_id": "a", "timestamp": iso(old_day), "data": {"cpu_usage_hours": 1}}])
    metric_values_refresh(usage_event_id=compute_hours.id)
    send(
        pusher,
        [{"customer_id": "a", "timestamp": iso(old_day + dt.timedelta(hours=5)), "data": {"cpu_usage_hours": 1}}],
    )
    metric_values_refresh(usage_event_id=compute_hours.id)

    assert values_of("cpu") == {("a", iso(old_day.replace(hour=0)), ""): "2"}


def test_duplicates_are_not_counted_twice(
    api: APIClient, pusher: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        create(api)
    record = rec("a", 1, 5, idempotency_key="once")

    send(pusher, [record, record])
    send(pusher, [record])
    metric_values_refresh(usage_event_id=compute_hours.id)

    assert values_of("cpu") == {("a", iso(HOUR), ""): "5"}


def test_voided_records_never_count(
    api: APIClient, pusher: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5), rec("a", 2, 7)])
    UsageRecord.objects.filter(data__cpu_usage_hours=7).update(voided=True)

    with django_capture_on_commit_callbacks(execute=True):
        create(api)

    assert values_of("cpu") == {("a", iso(HOUR), ""): "5"}


def test_an_aggregate_usage_event_counts_once_per_period(
    api: APIClient,
    organisation: Organisation,
    full_key: ApiKeyBundle,
    client_for: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    seats = usage_event_make(
        organisation=organisation, api_slug="seats", kind="aggregate", aggregate_period="day", data={"seats": "Int64"}
    )
    client = client_for(full_key.secret)
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/metrics/",
            {
                "name": "Seats",
                "slug": "seats",
                "usage_event": "seats",
                "aggregation": "sum",
                "field": "seats",
                "granularity": "day",
            },
            format="json",
        )
    day_start = HOUR.replace(hour=0)
    moment = HOUR if HOUR.hour > 0 else HOUR + dt.timedelta(minutes=5)

    send(client, [{"customer_id": "a", "timestamp": iso(moment), "data": {"seats": 10}}], slug="seats")
    send(
        client,
        [{"customer_id": "a", "timestamp": iso(moment + dt.timedelta(minutes=1)), "data": {"seats": 12}}],
        slug="seats",
    )
    metric_values_refresh(usage_event_id=seats.id)

    assert values_of("seats") == {("a", iso(day_start), ""): "12"}


def test_definition_change_bumps_the_version_and_recomputes_history(
    api: APIClient, pusher: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5), rec("a", 2, 7)])
    with django_capture_on_commit_callbacks(execute=True):
        create(api)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch("/api/v1/metrics/cpu/", {"aggregation": "max", "reason": "bill the peak"}, format="json")

    assert response.status_code == 200
    assert response.json()["version"] == 2
    value = MetricValue.objects.get(metric__slug="cpu")
    assert (value.value, value.metric_version) == ("7", 2)
    assert AuditEntry.objects.get(action="metric.update").reason == "bill the peak"


def test_renaming_does_not_bump_the_version(
    api: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        create(api)
    response = api.patch("/api/v1/metrics/cpu/", {"name": "CPU hours"}, format="json")
    assert response.json()["version"] == 1
    assert response.json()["name"] == "CPU hours"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"usage_event": "nope"}, "usage_event"),
        ({"field": "nope"}, "field"),
        ({"field": "region"}, "field"),
        ({"aggregation": "median"}, "aggregation"),
        ({"aggregation": "sum", "field": ""}, "field"),
        ({"granularity": "week"}, "granularity"),
        ({"filters": [{"field": "nope", "op": "eq", "value": 1}]}, "filters[0].field"),
        ({"filters": [{"field": "region", "op": "like", "value": "e"}]}, "filters[0].op"),
        ({"filters": [{"field": "cpu_usage_hours", "op": "gt", "value": "many"}]}, "filters[0].value"),
        ({"filters": [{"field": "region", "op": "in", "value": []}]}, "filters[0].value"),
        ({"group_by": ["a", "b", "c", "d"]}, "group_by"),
        ({"group_by": ["cpu_usage_hours"]}, "group_by"),
        ({"slug": "Bad Slug"}, "slug"),
    ],
)
def test_bad_definitions_get_400_naming_what_is_wrong(
    api: APIClient, compute_hours: UsageEvent, body: dict[str, Any], field: str
) -> None:
    response = create(api, **body)
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert not BillableMetric.objects.exists()


def test_preview_computes_without_storing(api: APIClient, pusher: APIClient) -> None:
    send(pusher, [rec("a", 1, 5), rec("b", 2, 7)])
    window = {"start": iso(HOUR - dt.timedelta(hours=1)), "end": iso(HOUR + dt.timedelta(hours=2))}

    unsaved = api.post(
        "/api/v1/metrics/preview/",
        {
            "usage_event": "compute_hours",
            "aggregation": "sum",
            "field": "cpu_usage_hours",
            "granularity": "hour",
            **window,
        },
        format="json",
    )

    assert unsaved.status_code == 200, unsaved.json()
    assert [(v["customer_id"], v["value"], v["period_start"]) for v in unsaved.json()["values"]] == [
        ("a", "5", iso(HOUR)),
        ("b", "7", iso(HOUR)),
    ]
    assert not MetricValue.objects.exists()
    assert not BillableMetric.objects.exists()


def test_values_total_and_override(api: APIClient, pusher: APIClient, django_capture_on_commit_callbacks: Any) -> None:
    send(pusher, [rec("a", 1, 5), rec("a", 61, 7), rec("b", 2, 1)])
    with django_capture_on_commit_callbacks(execute=True):
        create(api)

    listed = api.get("/api/v1/metrics/cpu/values/", {"customer_id": "a"}).json()["results"]
    first = next(v for v in listed if v["period_start"] == iso(HOUR))
    overridden = api.patch(
        f"/api/v1/metrics/cpu/values/{first['id']}/", {"override_value": "4.5", "reason": "credit"}, format="json"
    )
    total = api.get(
        "/api/v1/metrics/cpu/total/", {"customer_id": "a", "start": iso(HOUR), "end": iso(HOUR + dt.timedelta(hours=3))}
    )

    assert len(listed) == 2
    assert set(first) >= {
        "id",
        "customer_id",
        "period_start",
        "period_end",
        "dimension",
        "computed_value",
        "override_value",
        "value",
        "metric_version",
    }
    assert overridden.json()["value"] == "4.5"
    assert overridden.json()["computed_value"] == "5"
    assert total.json()["fields"] == [{"dimension": None, "quantity": "11.5"}]
    assert AuditEntry.objects.filter(action="metric_value.override", object_id=str(first["id"])).count() == 1


def test_an_override_survives_recomputation(
    api: APIClient, pusher: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5)])
    with django_capture_on_commit_callbacks(execute=True):
        create(api)
    value = MetricValue.objects.get()
    api.patch(f"/api/v1/metrics/cpu/values/{value.id}/", {"override_value": "1", "reason": "contract"}, format="json")

    send(pusher, [rec("a", 2, 5)])
    metric_values_refresh(usage_event_id=compute_hours.id)
    with django_capture_on_commit_callbacks(execute=True):
        api.patch("/api/v1/metrics/cpu/", {"aggregation": "max"}, format="json")

    value.refresh_from_db()
    assert (value.computed_value, value.override_value, value.value, value.metric_version) == ("5", "1", "1", 2)


SUM_PER_CUSTOMER = """
    SELECT customer_id, sum(cpu_usage_hours) AS quantity
    FROM compute_hours
    WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }}
    GROUP BY customer_id
"""


def test_a_recompute_that_raises_is_marked_failed_with_its_error_until_a_later_run_succeeds(
    api: APIClient, pusher: APIClient, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 5, 1.5), rec("a", 10, 2.25)])
    with django_capture_on_commit_callbacks(execute=True):
        create(api, kind="sql", sql=SUM_PER_CUSTOMER)
    metric = BillableMetric.objects.get(slug="cpu")

    def query_fails(**kwargs: Any) -> NoReturn:
        raise SandboxError({"sql": ["The query failed: division by zero"]})

    with monkeypatch.context() as patch:
        patch.setattr("metrics.sandbox.sql_metric_execute", query_fails)
        with pytest.raises(SandboxError):
            metric_recompute(metric_id=metric.id, version=metric.version)
    failed = BillableMetric.objects.get(id=metric.id)
    values_after_failure = values_of("cpu")
    rerun = metric_recompute(metric_id=metric.id, version=metric.version)
    recovered = BillableMetric.objects.get(id=metric.id)

    assert (failed.recompute_state, failed.recompute_error) == ("failed", "sql: The query failed: division by zero")
    assert values_after_failure == {("a", iso(HOUR), ""): "3.75"}  # what the last good run stored stays
    assert rerun is True
    assert (recovered.recompute_state, recovered.recompute_error) == ("idle", "")


def test_reconcile_reports_no_difference_then_catches_tampering(
    api: APIClient, pusher: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5), rec("b", 70, 2)])
    with django_capture_on_commit_callbacks(execute=True):
        create(api)
    out = io.StringIO()
    call_command("reconcile_metrics", stdout=out)
    assert "0 difference(s)" in out.getvalue()

    MetricValue.objects.filter(customer_id="a").update(computed_value="6")
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("reconcile_metrics", stdout=out)
    assert exited.value.code == 1
    assert "DIFF cpu customer=a" in out.getvalue()
    assert "stored=6 recomputed=5" in out.getvalue()


def test_metrics_of_another_organisation_are_invisible(
    api: APIClient, other_organisation: Organisation, client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    usage_event_make(organisation=other_organisation)
    other = client_for(api_key_make(organisation=other_organisation).secret)
    with django_capture_on_commit_callbacks(execute=True):
        create(other)

    assert api.get("/api/v1/metrics/").json()["results"] == []
    assert api.get("/api/v1/metrics/cpu/").status_code == 404
    assert api.get("/api/v1/metrics/cpu/values/").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"field": ["cpu_usage_hours"]},
        {"aggregation": ["sum"]},
        {"filters": [{"field": ["x"], "op": "eq", "value": 1}]},
        {"filters": [{"field": "region", "op": {"x": 1}, "value": 1}]},
        {"group_by": [["region"]]},
        {"group_by": "region"},
        {"slug": "preview"},
        {"slug": "new"},
        {"usage_event": ""},
    ],
)
def test_wrong_typed_definitions_get_400_not_500(
    api: APIClient, compute_hours: UsageEvent, body: dict[str, Any]
) -> None:
    response = create(api, **body)
    assert response.status_code == 400, response.content
    assert response.json()["errors"]
    assert not BillableMetric.objects.exists()


def test_a_metric_is_created_even_when_the_broker_is_unreachable(
    api: APIClient, compute_hours: UsageEvent, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from metrics import tasks

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.metric_recompute_task, "apply_async", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        response = create(api)

    assert response.status_code == 201
    metric = BillableMetric.objects.get(slug="cpu")
    assert metric.recompute_state == "running"  # the sweep restarts it once it stalls


@pytest.mark.parametrize(
    "value", ["2026-11-20T10:00:00+22:09", "2026-11-20T10:00:00-16:00", "9999-12-31T23:00:00-05:00"]
)
def test_a_period_filter_the_database_cannot_take_is_400_naming_it(
    api: APIClient, compute_hours: UsageEvent, value: str
) -> None:
    assert create(api).status_code == 201
    for name in ("period_start_after", "period_start_before"):
        response = api.get("/api/v1/metrics/cpu/values/", {name: value})
        assert response.status_code == 400, (name, value, response.content)
        assert list(response.json()["errors"]) == [name]


@pytest.mark.parametrize("field", ["name", "sql"])
def test_a_metric_field_with_a_nul_is_400_naming_it_and_nothing_is_stored(
    api: APIClient, compute_hours: UsageEvent, field: str
) -> None:
    body = {"kind": "sql", "sql": "SELECT customer_id, count(*) AS quantity FROM compute_hours GROUP BY 1"}
    body[field] = f"CPU\x00{body.get(field, 'hours')}"

    response = create(api, **body)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert not BillableMetric.objects.exists()
