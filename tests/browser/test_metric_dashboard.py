"""Usage > Billable metrics in a real browser (SPEC §7): build, preview, save, watch values follow ingestion, override."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import time
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from metrics.models import BillableMetric, MetricValue
from tests.browser.pages import PASSWORD, Screenshot, sign_in
from tests.factories import api_key_make, organisation_make, usage_event_make
from zenskar_site.accounts.models import Organisation

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "mary@example.com"
UPDATE_TIMEOUT_SECONDS = 10


@pytest.fixture
def org(transactional_db: None) -> Organisation:
    return organisation_make(name="Browser Org", admin_email=ADMIN_EMAIL, password=PASSWORD)


def ingest(live_server: Any, org: Organisation, secret: str, records: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        live_server.url + "/usage/compute_hours",
        data=json.dumps(records).encode(),
        headers={"Content-Type": "application/json", "x-api-key": secret, "organisation": str(org.id)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert (response.status, body["accepted"], body["rejected"]) == (202, len(records), 0), body


def record(customer: str, hours: float, minutes_ago: float) -> dict[str, Any]:
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    return {
        "customer_id": customer,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "data": {"cpu_usage_hours": hours, "region": "eu"},
    }


def form_ready(page: Page) -> None:
    """Wait for the form's script, so typing is not lost before its listeners are attached."""
    expect(page.locator("#metric-form[data-ready=true]")).to_have_count(1)


def metric_page_ready(page: Page) -> None:
    expect(page.locator("body[data-metric-page-ready=true]")).to_have_count(1)


def totals(page: Page) -> dict[str, str]:
    rows = page.locator("#totals-table tbody tr")
    return {
        (rows.nth(i).locator("td").nth(0).text_content() or "").strip(): (
            rows.nth(i).locator("td").nth(1).text_content() or ""
        ).strip()
        for i in range(rows.count())
    }


def chart_sum(page: Page) -> float:
    values = page.locator("#metric-chart rect.bar").evaluate_all("bars => bars.map(b => b.dataset.value)")
    return sum(float(v) for v in values if v)


def test_build_preview_save_and_watch_a_metric_follow_ingestion(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    usage_event_make(organisation=org, api_slug="compute_hours", name="Compute hours")
    secret = api_key_make(organisation=org, scope="ingest").secret
    ingest(
        live_server,
        org,
        secret,
        [record("cus_acme", 1.5, 3), record("cus_acme", 2.25, 2), record("cus_globex", 4, 1)],
    )
    sign_in(page, live_server, email=ADMIN_EMAIL)

    page.locator("nav.sidebar").get_by_role("link", name="Billable metrics").click()
    expect(page.get_by_role("heading", name="Billable metrics", exact=True)).to_be_visible()
    expect(page.locator("nav.sidebar .nav-link.active")).to_have_text("Billable metrics")
    expect(page.locator("#metrics-empty")).to_be_visible()
    screenshot("metric_01_list_empty")
    page.get_by_role("link", name="+ ADD BILLABLE METRIC").click()
    expect(page.get_by_role("heading", name="Add billable metric")).to_be_visible()
    form_ready(page)

    # The slug follows the name as it is typed.
    page.locator("#id_name").press_sequentially("CPU hours")
    expect(page.locator("#id_slug")).to_have_value("cpu_hours")

    # Preview before choosing a usage event: the error sits next to that field, nothing is saved.
    page.get_by_role("button", name="Preview").click()
    expect(page.locator('[data-errors-for="usage_event"] .error')).to_contain_text("Choose the usage event")
    expect(page.locator("#preview-error")).to_be_visible()
    screenshot("metric_02_preview_error")

    page.locator("#id_usage_event").select_option("compute_hours")
    page.locator("#id_aggregation").select_option("sum")
    # The field list is the chosen usage event's numeric fields: the only one is picked.
    expect(page.locator("#id_field")).to_have_value("cpu_usage_hours")
    expect(page.locator("#id_field option")).to_have_count(2)
    page.locator("#add-filter").click()
    filter_row = page.locator("tr.filter-row").first
    filter_row.locator(".filter-field").select_option("cpu_usage_hours")
    filter_row.locator(".filter-op").select_option("gt")
    filter_row.locator(".filter-value").fill("0")
    expect(page.locator("#group-by-options input[type=checkbox]")).to_have_count(1)
    page.locator("#id_granularity").select_option("hour")
    # The SQL editor is one click away, with the tables it may read.
    page.locator("label.segment", has_text="SQL").click()
    expect(page.locator("#id_sql")).to_be_visible()
    expect(page.locator("#sql-hint")).to_contain_text("compute_hours")
    expect(page.locator("#sql-hint")).to_contain_text("cpu_usage_hours")
    screenshot("metric_03_sql_editor")
    page.locator("label.segment", has_text="Builder").click()
    expect(page.locator("#id_usage_event")).to_be_visible()
    expect(page.locator("#id_sql")).to_be_hidden()

    page.get_by_role("button", name="Preview").click()
    preview = page.locator("#preview-table")
    expect(preview).to_be_visible()
    expect(page.locator('[data-errors-for="usage_event"] .error')).to_have_count(0)
    expect(preview).to_contain_text("cus_acme")
    expect(preview).to_contain_text("cus_globex")
    expect(preview.locator("td.amount", has_text=re.compile(r"^4$"))).to_have_count(1)
    screenshot("metric_04_builder_preview")
    assert not BillableMetric.objects.exists()

    page.get_by_role("button", name="SAVE METRIC").click()
    expect(page).to_have_url(re.compile(r"/metrics/cpu_hours/$"))
    expect(page.get_by_role("heading", name="CPU hours")).to_be_visible()
    metric_page_ready(page)
    expect(page.locator(".message.success")).to_contain_text("saved")
    metric = BillableMetric.objects.get(organisation=org, slug="cpu_hours")
    assert metric.filters == [{"field": "cpu_usage_hours", "op": "gt", "value": 0.0}]
    expect(page.locator("#values-table")).to_contain_text("cus_acme")
    expect(page.locator("#metric-chart")).to_be_visible()
    assert totals(page) == {"cus_acme": "3.75", "cus_globex": "4"}
    assert chart_sum(page) == pytest.approx(7.75)
    screenshot("metric_05_detail")

    # While the history is recomputed the page shows progress and refreshes itself until it is done.
    BillableMetric.objects.filter(id=metric.id).update(recompute_state="running", recompute_done=1, recompute_total=3)
    page.reload()
    expect(page.locator("#recompute-bar")).to_be_visible()
    expect(page.locator("#recompute-progress")).to_contain_text("1 of 3 months")
    screenshot("metric_05b_recomputing")
    BillableMetric.objects.filter(id=metric.id).update(recompute_state="idle", recompute_done=3)
    expect(page.locator("#recompute-progress")).to_have_count(0, timeout=6_000)
    expect(page.locator(".badge.status-idle")).to_have_text("Up to date")

    # More usage arrives through the API: the page shows it after a reload (the refresh runs on ingest).
    ingest(live_server, org, secret, [record("cus_acme", 1.25, 0.5), record("cus_initech", 2, 0.5)])
    deadline = time.monotonic() + UPDATE_TIMEOUT_SECONDS
    while totals(page).get("cus_acme") != "5":
        assert time.monotonic() < deadline, f"values did not update within {UPDATE_TIMEOUT_SECONDS}s: {totals(page)}"
        page.wait_for_timeout(500)
        page.reload()
    metric_page_ready(page)
    assert totals(page) == {"cus_acme": "5", "cus_globex": "4", "cus_initech": "2"}
    assert chart_sum(page) == pytest.approx(11)
    expect(page.locator("#grand-total")).to_have_text("11")
    screenshot("metric_06_detail_updated")

    # An admin overrides one value with a reason; the effective value shows in the table, totals and chart.
    row = page.locator("#values-table tbody tr", has_text="cus_globex")
    row.get_by_role("button", name="Override").click()
    dialog = page.locator("#override-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#override-clear")).to_be_hidden()
    dialog.locator("#override-value").fill("3")
    dialog.locator("#override-reason").fill("Goodwill credit, ticket 4711")
    screenshot("metric_07_override_dialog")
    dialog.get_by_role("button", name="Save override").click()
    expect(page.locator(".message.success")).to_contain_text("Override set for cus_globex")
    metric_page_ready(page)
    row = page.locator("#values-table tbody tr", has_text="cus_globex")
    expect(row.locator("td.effective")).to_have_text("3")
    expect(row.locator(".badge.overridden")).to_be_visible()
    assert totals(page)["cus_globex"] == "3"
    assert chart_sum(page) == pytest.approx(10)
    value = MetricValue.objects.get(metric=metric, customer_id="cus_globex")
    assert (value.computed_value, value.override_value, value.override_reason) == (
        "4",
        "3",
        "Goodwill credit, ticket 4711",
    )
    audit = page.locator("#metric-audit")
    expect(audit).to_contain_text("metric_value.override")
    expect(audit).to_contain_text("Goodwill credit, ticket 4711")
    expect(audit).to_contain_text(f"user:{ADMIN_EMAIL}")
    page.locator("#audit").scroll_into_view_if_needed()
    screenshot("metric_08_overridden")

    # And clears it again, with a reason too.
    row.get_by_role("button", name="Override").click()
    expect(dialog.locator("#override-clear")).to_be_visible()
    dialog.locator("#override-reason").fill("Credit withdrawn")
    dialog.get_by_role("button", name="Clear override").click()
    expect(page.locator(".message.success")).to_contain_text("Override cleared for cus_globex")
    expect(page.locator("#values-table tbody tr", has_text="cus_globex").locator("td.effective")).to_have_text("4")
    value.refresh_from_db()
    assert value.override_value is None

    page.locator("nav.sidebar").get_by_role("link", name="Billable metrics").click()
    expect(page.locator("#metrics-table")).to_contain_text("CPU hours")
    expect(page.locator("#metrics-table")).to_contain_text("Up to date")
    screenshot("metric_09_list")


@pytest.mark.skipif(
    importlib.util.find_spec("metrics.sandbox") is None,
    reason="metrics/sandbox.py (the SQL sandbox) is not in the tree yet",
)
def test_the_sql_editor_previews_a_query_shows_its_errors_and_saves_it(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    usage_event_make(organisation=org, api_slug="compute_hours", name="Compute hours")
    secret = api_key_make(organisation=org, scope="ingest").secret
    ingest(
        live_server, org, secret, [record("cus_acme", 1.5, 3), record("cus_acme", 2.5, 2), record("cus_globex", 4, 1)]
    )
    sign_in(page, live_server, email=ADMIN_EMAIL)
    page.goto(live_server.url + "/metrics/new/")
    form_ready(page)

    page.locator("#id_name").fill("CPU by SQL")
    page.locator("label.segment", has_text="SQL").click()
    page.locator("#id_granularity").select_option("day")
    editor = page.locator("#id_sql")
    editor.fill("SELECT customer_id, SUM(cpu_usage_hours) AS quantity FROM compute_hourz GROUP BY customer_id")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator('[data-errors-for="sql"] .error')).to_be_visible()
    expect(page.locator('[data-errors-for="sql"]')).to_contain_text("compute_hourz")
    screenshot("metric_10_sql_error")

    editor.fill(
        "SELECT customer_id, SUM(cpu_usage_hours) AS quantity\nFROM compute_hours\n"
        "WHERE timestamp >= {{ period_start }} AND timestamp < {{ period_end }}\nGROUP BY customer_id"
    )
    page.get_by_role("button", name="Preview").click()
    preview = page.locator("#preview-table")
    expect(preview).to_be_visible()
    expect(page.locator('[data-errors-for="sql"] .error')).to_have_count(0)
    expect(preview.locator("tr", has_text="cus_acme").locator("td.amount")).to_have_text("4")
    expect(preview.locator("tr", has_text="cus_globex").locator("td.amount")).to_have_text("4")
    screenshot("metric_11_sql_preview")
    assert not BillableMetric.objects.exists()

    page.get_by_role("button", name="SAVE METRIC").click()
    expect(page).to_have_url(re.compile(r"/metrics/cpu_by_sql/$"))
    expect(page.locator("#metric-sql")).to_contain_text("FROM compute_hours")
    assert totals(page) == {"cus_acme": "4", "cus_globex": "4"}
    screenshot("metric_12_sql_detail")
