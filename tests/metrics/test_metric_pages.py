"""SPEC §7 Usage > Billable metrics: the list, the builder and SQL editor with preview, a metric's page, overrides."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from typing import Any
from urllib.parse import unquote

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from metrics.definitions import metric_create
from metrics.models import BillableMetric, MetricValue
from tests.factories import ApiKeyBundle, organisation_admin, usage_event_make
from usage.models import UsageEvent
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Membership, Organisation

HOUR = (timezone.now() - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
SANDBOX_MISSING = importlib.util.find_spec("metrics.sandbox") is None


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def local(moment: dt.datetime) -> str:
    """A `datetime-local` input's value (the page reads it as UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rec(customer: str, minutes: float, hours: float, region: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"cpu_usage_hours": hours}
    if region is not None:
        data["region"] = region
    return {"customer_id": customer, "timestamp": iso(HOUR + dt.timedelta(minutes=minutes)), "data": data}


@pytest.fixture
def pusher(full_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent) -> APIClient:
    return client_for(full_key.secret)


def send(pusher: APIClient, records: list[dict[str, Any]]) -> None:
    response = pusher.post("/usage/compute_hours", data=json.dumps(records), content_type="application/json")
    assert response.status_code in (200, 201, 202), response.content


@pytest.fixture
def admin(client: Client, organisation: Organisation) -> Client:
    client.force_login(organisation_admin(organisation))
    return client


@pytest.fixture
def viewer(organisation: Organisation, django_user_model: Any) -> Client:
    user: User = django_user_model.objects.create_user(username="viewer@acme.test", password="pw-123456")
    Membership.objects.create(user=user, organisation=organisation, role="viewer")
    client = Client()
    client.force_login(user)
    return client


def builder_form(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "CPU hours",
        "slug": "cpu",
        "kind": "builder",
        "usage_event": "compute_hours",
        "aggregation": "sum",
        "field": "cpu_usage_hours",
        "filters": "[]",
        "granularity": "hour",
        **overrides,
    }


def window(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    return {"preview-start": local(start), "preview-end": local(end)}


def metric_make(organisation: Organisation, django_capture_on_commit_callbacks: Any, **body: Any) -> BillableMetric:
    with django_capture_on_commit_callbacks(execute=True):
        return metric_create(
            actor=system_actor(organisation=organisation),
            body={
                "name": "CPU hours",
                "slug": "cpu",
                "usage_event": "compute_hours",
                "aggregation": "sum",
                "field": "cpu_usage_hours",
                "granularity": "hour",
                **body,
            },
        )


def errors_for(html: str, name: str) -> str:
    """The text of the error box next to one form field."""
    match = re.search(rf'data-errors-for="{name}">(.*?)</div>\s*(?:</div>|$)', html, re.S)
    return re.sub(r"<[^>]+>", " ", match.group(1)) if match else ""


def table_rows(html: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, f"no #{table_id} in the page"
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows.append([re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip() for c in cells])
    return rows


# --- the list ---


def test_the_list_shows_each_metric_with_its_source_aggregation_and_status(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    metric_make(organisation, django_capture_on_commit_callbacks)

    page = admin.get("/metrics/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "Billable metrics" in html
    assert "+ ADD BILLABLE METRIC" in html
    [row] = table_rows(html, "metrics-table")
    assert row[:6] == ["CPU hours", "cpu", "compute_hours", "Sum of cpu_usage_hours", "Hour", "v1"]
    assert row[6] == "Up to date"
    assert 'href="/metrics/cpu/"' in html


def test_the_sidebar_marks_billable_metrics_active(admin: Client, organisation: Organisation) -> None:
    html = admin.get("/metrics/").content.decode()

    assert re.search(r'class="nav-link active" href="/metrics/">Billable metrics</a>', html)


def test_viewers_see_the_list_without_the_add_button(viewer: Client) -> None:
    page = viewer.get("/metrics/")

    assert page.status_code == 200
    assert "+ ADD BILLABLE METRIC" not in page.content.decode()


# --- the builder and the SQL editor ---


def test_the_new_page_offers_the_active_usage_events_and_describes_their_tables(
    admin: Client, compute_hours: UsageEvent, organisation: Organisation
) -> None:
    usage_event_make(organisation=organisation, api_slug="old_event", name="Old event")
    UsageEvent.objects.filter(api_slug="old_event").update(archived=True)

    html = admin.get("/metrics/new/").content.decode()

    assert 'value="compute_hours"' in html
    assert 'value="old_event"' not in html
    assert "SAVE METRIC" in html
    assert "{{ period_start }}" in html
    assert "{{ period_end }}" in html
    hint = re.search(r'id="sql-hint">(.*?)</section>', html, re.S)
    assert hint
    assert "compute_hours" in hint.group(1)
    assert "cpu_usage_hours" in hint.group(1)
    assert "Nullable(String)" in hint.group(1)
    builder = json.loads(re.search(r'id="metric-builder" type="application/json">(.*?)</script>', html, re.S).group(1))
    # (PostgreSQL's jsonb keeps the schema's keys in its own order.)
    assert sorted(builder["schemas"]["compute_hours"], key=lambda f: f["name"]) == [
        {"name": "cpu_usage_hours", "type": "Float64", "numeric": True, "groupable": False},
        {"name": "region", "type": "Nullable(String)", "numeric": False, "groupable": True},
    ]


def test_saving_a_builder_metric_stores_it_and_computes_its_values(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 5, 1.5, "eu"), rec("a", 10, 2.25, "eu"), rec("a", 20, 9, "us"), rec("b", 65, 4, "eu")])

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            "/metrics/new/",
            builder_form(filters=json.dumps([{"field": "region", "op": "in", "value": "eu, ap"}]), group_by=["region"]),
        )

    assert response.status_code == 302
    assert response["Location"] == "/metrics/cpu/"
    metric = BillableMetric.objects.get(organisation=organisation, slug="cpu")
    assert (metric.name, metric.kind, metric.aggregation, metric.field, metric.granularity) == (
        "CPU hours",
        "builder",
        "sum",
        "cpu_usage_hours",
        "hour",
    )
    assert metric.filters == [{"field": "region", "op": "in", "value": ["eu", "ap"]}]
    assert metric.group_by == ["region"]
    assert {(v.customer_id, v.period_start, v.value) for v in MetricValue.objects.filter(metric=metric)} == {
        ("a", HOUR, "3.75"),
        ("b", HOUR + dt.timedelta(hours=1), "4"),
    }
    assert AuditEntry.objects.filter(action="metric.create", object_id="cpu").count() == 1


def test_numeric_filter_values_typed_as_text_are_read_as_numbers(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 5, 1.5), rec("a", 10, 2.5)])

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            "/metrics/new/",
            builder_form(filters=json.dumps([{"field": "cpu_usage_hours", "op": "gte", "value": " 2 "}])),
        )

    assert response.status_code == 302
    metric = BillableMetric.objects.get(slug="cpu")
    assert metric.filters == [{"field": "cpu_usage_hours", "op": "gte", "value": 2.0}]
    assert MetricValue.objects.get(metric=metric).value == "2.5"


def test_bad_input_shows_the_errors_next_to_their_fields_and_stores_nothing(
    admin: Client, compute_hours: UsageEvent
) -> None:
    response = admin.post(
        "/metrics/new/",
        builder_form(
            slug="Bad slug!",
            field="region",
            filters=json.dumps([{"field": "cpu_usage_hours", "op": "gt", "value": "lots"}]),
        ),
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "lowercase letters, digits" in errors_for(html, "slug")
    assert "needs a numeric field" in errors_for(html, "field")
    assert "A filter is not right" in errors_for(html, "filters")
    row_errors = json.loads(re.search(r'id="filter-errors" type="application/json">(.*?)</script>', html).group(1))
    assert list(row_errors) == ["0"]
    assert "Expected Float64" in row_errors["0"][0]
    # The form keeps what was typed, so nothing has to be entered again.
    assert 'value="Bad slug!"' in html
    assert '"filters": [{"field": "cpu_usage_hours", "op": "gt", "value": "lots"}]' in html
    assert not BillableMetric.objects.exists()
    assert not AuditEntry.objects.filter(action="metric.create").exists()


def test_a_malformed_filter_list_is_an_error_not_a_crash(admin: Client, compute_hours: UsageEvent) -> None:
    response = admin.post("/metrics/new/", builder_form(filters=json.dumps([{"field": ["region"], "op": "eq"}])))
    preview = admin.post(
        "/metrics/preview/", {**builder_form(filters="{not json"), **window(HOUR, HOUR + dt.timedelta(hours=1))}
    )

    assert response.status_code == 200
    assert "list of {field, op, value} objects" in errors_for(response.content.decode(), "filters")
    assert preview.status_code == 400
    assert preview.json()["errors"]["filters"] == ["The filters are not valid JSON."]
    assert not BillableMetric.objects.exists()


def test_a_missing_name_is_reported_together_with_the_definitions_errors(
    admin: Client, compute_hours: UsageEvent
) -> None:
    response = admin.post("/metrics/new/", builder_form(name="", slug="", aggregation="avg", field=""))

    html = response.content.decode()
    assert "needs a name" in errors_for(html, "name")
    assert "A slug is 1-64 characters" in errors_for(html, "slug")
    assert "The avg aggregation needs a field" in errors_for(html, "field")
    assert not BillableMetric.objects.exists()


def test_a_taken_slug_and_a_missing_usage_event_are_reported_on_their_fields(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    metric_make(organisation, django_capture_on_commit_callbacks)

    response = admin.post("/metrics/new/", builder_form(name="Again", usage_event=""))

    html = response.content.decode()
    assert response.status_code == 200
    assert "already taken" in errors_for(html, "slug")
    assert "Choose the usage event" in errors_for(html, "usage_event")
    assert BillableMetric.objects.count() == 1


def test_the_preview_returns_values_of_the_unsaved_definition_and_stores_nothing(
    admin: Client, pusher: APIClient
) -> None:
    send(pusher, [rec("a", 1, 5), rec("a", 70, 1), rec("b", 2, 7)])
    audit_before = AuditEntry.objects.count()

    response = admin.post(
        "/metrics/preview/",
        {**builder_form(name="", slug=""), **window(HOUR - dt.timedelta(hours=1), HOUR + dt.timedelta(hours=3))},
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert [(v["customer_id"], v["period_start"], v["value"]) for v in body["values"]] == [
        ("a", iso(HOUR), "5"),
        ("b", iso(HOUR), "7"),
        ("a", iso(HOUR + dt.timedelta(hours=1)), "1"),
    ]
    assert body["count"] == 3
    assert body["granularity"] == "hour"
    assert not BillableMetric.objects.exists()
    assert not MetricValue.objects.exists()
    assert AuditEntry.objects.count() == audit_before


def test_preview_errors_are_keyed_by_the_form_field_they_belong_to(admin: Client, compute_hours: UsageEvent) -> None:
    bad_definition = admin.post(
        "/metrics/preview/",
        {
            **builder_form(
                aggregation="max", field="nope", filters=json.dumps([{"field": "region", "op": "gt", "value": "x"}])
            ),
            **window(HOUR, HOUR + dt.timedelta(hours=1)),
        },
    )
    bad_window = admin.post("/metrics/preview/", {**builder_form(), **window(HOUR, HOUR - dt.timedelta(hours=1))})
    too_long = admin.post("/metrics/preview/", {**builder_form(), **window(HOUR - dt.timedelta(days=365), HOUR)})

    assert bad_definition.status_code == 400
    assert "Unknown field 'nope'" in bad_definition.json()["errors"]["field"][0]
    assert "gt does not apply to a String field" in bad_definition.json()["filter_errors"]["0"][0]
    assert bad_window.status_code == 400
    assert list(bad_window.json()["errors"]) == ["preview_end"]
    assert too_long.status_code == 400
    assert "at most 1000 hour periods" in too_long.json()["errors"]["preview_end"][0]


@pytest.mark.skipif(SANDBOX_MISSING, reason="metrics/sandbox.py (the SQL sandbox) is not in the tree yet")
def test_the_sql_editor_previews_and_saves_a_sql_metric(
    admin: Client, pusher: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5), rec("a", 2, 1), rec("b", 3, 7)])
    sql = (
        "SELECT customer_id, SUM(cpu_usage_hours) AS quantity FROM compute_hours "
        "WHERE timestamp >= {{ period_start }} AND timestamp < {{ period_end }} GROUP BY customer_id"
    )
    form = {"name": "CPU by SQL", "slug": "cpu_sql", "kind": "sql", "sql": sql, "granularity": "hour", "filters": "[]"}

    preview = admin.post("/metrics/preview/", {**form, **window(HOUR, HOUR + dt.timedelta(hours=1))})
    refused = admin.post("/metrics/new/", {**form, "sql": "DELETE FROM compute_hours"})
    with django_capture_on_commit_callbacks(execute=True):
        saved = admin.post("/metrics/new/", form)

    assert preview.status_code == 200, preview.content
    assert [(v["customer_id"], v["value"]) for v in preview.json()["values"]] == [("a", "6"), ("b", "7")]
    assert refused.status_code == 200
    assert errors_for(refused.content.decode(), "sql").strip()
    assert saved.status_code == 302, errors_for(saved.content.decode(), "sql")
    metric = BillableMetric.objects.get(slug="cpu_sql")
    assert (metric.kind, metric.sql, metric.usage_event_id) == ("sql", sql, None)
    assert {(v.customer_id, v.value) for v in MetricValue.objects.filter(metric=metric)} == {("a", "6"), ("b", "7")}
    detail = admin.get("/metrics/cpu_sql/").content.decode()
    assert table_rows(detail, "totals-table") == [["a", "6"], ["b", "7"]]  # no dimension returned: no column
    assert "FROM compute_hours" in detail


# --- a metric's page ---


def test_the_metric_page_shows_values_totals_and_a_chart_of_effective_values(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 5, 1.5), rec("a", 10, 2.25), rec("b", 65, 4), rec("a", 70, 0.5)])
    metric_make(organisation, django_capture_on_commit_callbacks)

    page = admin.get("/metrics/cpu/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "<h1>CPU hours" in html
    # customer, period start, computed, override, effective value, status (then the Override button)
    rows = [row[:6] for row in table_rows(html, "values-table")]
    later, earlier = f"{HOUR + dt.timedelta(hours=1):%Y-%m-%d %H:%M}", f"{HOUR:%Y-%m-%d %H:%M}"
    assert [row[1] for row in rows] == [later, later, earlier]  # newest period first
    assert sorted(rows) == [
        ["a", earlier, "3.75", "—", "3.75", ""],
        ["a", later, "0.5", "—", "0.5", ""],
        ["b", later, "4", "—", "4", ""],
    ]
    assert table_rows(html, "totals-table") == [["a", "4.25"], ["b", "4"]]
    assert 'id="grand-total">8.25<' in html
    chart = re.search(r'<svg id="metric-chart".*?</svg>', html, re.S)
    assert chart
    bars = re.findall(r'class="bar"[^>]*data-value="([^"]*)"', chart.group(0))
    assert len(bars) == 48  # the default window: 48 hours, ending with the newest value
    assert bars[-2:] == ["3.75", "4.5"]
    assert set(bars[:-2]) == {""}
    assert 'data-total="8.25"' in chart.group(0)


def test_the_values_table_filters_by_customer_and_pages_with_a_cursor(
    admin: Client,
    pusher: APIClient,
    organisation: Organisation,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("metrics.selectors.VALUES_PER_PAGE", 2)
    send(pusher, [rec("a", 60 * i + 1, i + 1) for i in range(3)] + [rec("b", 1, 10)])
    metric_make(organisation, django_capture_on_commit_callbacks)

    first = admin.get("/metrics/cpu/", {"customer_id": "a"}).content.decode()
    cursor = re.search(r'href="\?customer_id=a&amp;cursor=([^"#]+)#values" rel="next"', first)
    assert cursor
    second = admin.get("/metrics/cpu/", {"customer_id": "a", "cursor": unquote(cursor.group(1))})
    broken = admin.get("/metrics/cpu/", {"cursor": "nonsense"}).content.decode()

    assert [row[4] for row in table_rows(first, "values-table")] == ["3", "2"]
    assert table_rows(first, "totals-table") == [["a", "6"]]
    assert [row[4] for row in table_rows(second.content.decode(), "values-table")] == ["1"]
    assert 'rel="next"' not in second.content.decode()
    assert "This page link is broken" in broken


def test_a_window_of_too_many_periods_is_refused_with_a_message(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 1)])
    metric_make(organisation, django_capture_on_commit_callbacks)

    html = admin.get("/metrics/cpu/", {"start": "2020-01-01T00:00", "end": "2026-01-01T00:00"}).content.decode()

    assert "Show at most 500 hour periods" in html
    assert 'id="values-table"' not in html


def test_a_running_recompute_shows_progress_and_refreshes_the_page_until_done(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    metric = metric_make(organisation, django_capture_on_commit_callbacks)
    BillableMetric.objects.filter(id=metric.id).update(recompute_state="running", recompute_done=1, recompute_total=4)

    running = admin.get("/metrics/cpu/").content.decode()
    BillableMetric.objects.filter(id=metric.id).update(recompute_state="idle")
    done = admin.get("/metrics/cpu/").content.decode()

    assert '<progress id="recompute-bar" max="4" value="1">' in running
    assert "1 of 4 months of records done (25%)" in running
    assert 'data-refresh-seconds="2"' in running
    assert "Recomputing 1/4" in running
    assert "data-refresh-seconds" not in done
    assert "recompute-bar" not in done
    assert "Up to date" in done


def test_an_override_is_set_and_cleared_with_a_reason_and_the_effective_value_shows(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5), rec("b", 2, 1)])
    metric_make(organisation, django_capture_on_commit_callbacks)
    value = MetricValue.objects.get(customer_id="a")
    url = f"/metrics/cpu/values/{value.id}/override/"

    set_response = admin.post(
        url,
        {"action": "set", "override_value": "4.5", "reason": "credit note 17", "next": "/metrics/cpu/?customer_id=a"},
    )
    value.refresh_from_db()
    overridden = admin.get("/metrics/cpu/").content.decode()

    assert set_response.status_code == 302
    assert set_response["Location"] == "/metrics/cpu/?customer_id=a"
    assert (value.computed_value, value.override_value, value.override_reason) == ("5", "4.5", "credit note 17")
    row = next(r for r in table_rows(overridden, "values-table") if r[0] == "a")
    assert row[2:6] == ["5", "4.5 credit note 17", "4.5", "overridden"]
    assert table_rows(overridden, "totals-table") == [["a", "4.5"], ["b", "1"]]
    assert 'data-total="5.5"' in overridden
    assert "Override set for a" in overridden

    clear_response = admin.post(url, {"action": "clear", "override_value": "", "reason": "credit note withdrawn"})
    value.refresh_from_db()
    cleared = admin.get("/metrics/cpu/").content.decode()

    assert clear_response.status_code == 302
    assert (value.override_value, value.value) == (None, "5")
    assert table_rows(cleared, "totals-table") == [["a", "5"], ["b", "1"]]
    assert [e.action for e in AuditEntry.objects.filter(object_type="metric_value").order_by("id")] == [
        "metric_value.override",
        "metric_value.clear_override",
    ]


def test_an_override_needs_a_reason_and_a_number(
    admin: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5)])
    metric_make(organisation, django_capture_on_commit_callbacks)
    value = MetricValue.objects.get()
    url = f"/metrics/cpu/values/{value.id}/override/"

    no_reason = admin.post(url, {"action": "set", "override_value": "9", "reason": " "}, follow=True)
    not_a_number = admin.post(url, {"action": "set", "override_value": "lots", "reason": "typo"}, follow=True)
    clear_without_reason = admin.post(url, {"action": "clear", "reason": ""}, follow=True)

    value.refresh_from_db()
    assert value.override_value is None
    assert "Override not saved: Say why the value is overridden" in no_reason.content.decode()
    assert "Override not saved: Expected Decimal" in not_a_number.content.decode()
    assert "Override not saved: Say why" in clear_without_reason.content.decode()
    assert not AuditEntry.objects.filter(object_type="metric_value").exists()


def test_viewers_cannot_create_preview_or_override(
    viewer: Client, pusher: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    send(pusher, [rec("a", 1, 5)])
    metric_make(organisation, django_capture_on_commit_callbacks)
    value = MetricValue.objects.get()

    new_page = viewer.get("/metrics/new/")
    create = viewer.post("/metrics/new/", builder_form(slug="other"))
    preview = viewer.post("/metrics/preview/", {**builder_form(), **window(HOUR, HOUR + dt.timedelta(hours=1))})
    override = viewer.post(
        f"/metrics/cpu/values/{value.id}/override/", {"action": "set", "override_value": "1", "reason": "x"}
    )
    detail = viewer.get("/metrics/cpu/").content.decode()

    assert (new_page.status_code, create.status_code, preview.status_code, override.status_code) == (403, 403, 403, 403)
    assert BillableMetric.objects.count() == 1
    value.refresh_from_db()
    assert value.override_value is None
    assert table_rows(detail, "values-table")[0][4] == "5"
    assert "override-open" not in detail
    assert 'id="override-dialog"' not in detail


def test_another_organisations_metric_is_not_found(
    admin: Client, other_organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    usage_event_make(organisation=other_organisation)
    metric_make(other_organisation, django_capture_on_commit_callbacks)
    theirs = MetricValue.objects.create(
        metric=BillableMetric.objects.get(organisation=other_organisation),
        customer_id="x",
        period_start=HOUR,
        period_end=HOUR + dt.timedelta(hours=1),
        computed_value="1",
        metric_version=1,
    )

    detail = admin.get("/metrics/cpu/")
    override = admin.post(
        f"/metrics/cpu/values/{theirs.id}/override/", {"action": "set", "override_value": "0", "reason": "x"}
    )
    listed = admin.get("/metrics/").content.decode()

    assert detail.status_code == 404
    assert override.status_code == 404
    theirs.refresh_from_db()
    assert theirs.override_value is None
    assert 'id="metrics-table"' not in listed


def test_a_failed_metric_shows_its_error_and_when_it_is_retried(
    admin: Client, organisation: Organisation, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    metric = metric_make(organisation, django_capture_on_commit_callbacks)
    retry_at = dt.datetime(2026, 11, 30, 17, 45, tzinfo=dt.UTC)
    BillableMetric.objects.filter(id=metric.id).update(
        recompute_state="failed", recompute_error="sql: The query failed: division by zero", recompute_retry_at=retry_at
    )

    html = admin.get("/metrics/cpu/").content.decode()

    banner = re.search(r'<div class="message error" id="recompute-failed">(.*?)</div>', html, re.DOTALL)
    assert banner is not None
    assert "Computing version 1 failed: sql: The query failed: division by zero" in banner.group(1)
    assert "retried at 2026-11-30 17:45:00 UTC" in banner.group(1)
