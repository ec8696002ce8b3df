"""A usage event's page in a real browser (SPEC §7): records sent to the API show in its table, chart and error log."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import PASSWORD, Screenshot, sign_in
from tests.factories import api_key_make, organisation_make, usage_event_make
from zenskar_site.accounts.models import Organisation

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "grace@example.com"


@pytest.fixture
def org(transactional_db: None) -> Organisation:
    return organisation_make(name="Browser Org", admin_email=ADMIN_EMAIL, password=PASSWORD)


def ingest(url: str, secret: str, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(records).encode(),
        headers={"Content-Type": "application/json", "x-api-key": secret},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 422 when every record is rejected
        return exc.code, json.loads(exc.read())


def test_records_chart_and_error_log_show_what_was_sent(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    usage_event_make(organisation=org, api_slug="compute_hours", name="Compute hours")
    secret = api_key_make(organisation=org, scope="ingest").secret
    now = dt.datetime.now(dt.UTC)
    records: list[dict[str, Any]] = [
        {
            "customer_id": f"cus_{name}",
            "timestamp": (now - dt.timedelta(minutes=10 * i)).isoformat().replace("+00:00", "Z"),
            "data": {"cpu_usage_hours": 1.5 * (i + 1), "region": "eu-west-1" if i % 2 else None},
            "idempotency_key": f"job-{i:04d}",
        }
        for i, name in enumerate(["acme", "globex", "initech", "umbrella"])
    ]
    # Long values must wrap inside their cells rather than widen the page.
    records[3]["data"]["region"] = "-".join(["eu-central-1-availability-zone-b"] * 8)
    records[3]["idempotency_key"] = "job-0003-" + "f" * 120
    bad = {
        "customer_id": "cus_broken",
        "timestamp": records[0]["timestamp"],
        "data": {"cpu_usage_hours": "lots", "note": "n" * 400},
    }

    status, body = ingest(f"{live_server.url}/usage/compute_hours", secret, records)
    assert (status, body["accepted"]) == (202, 4)
    status, body = ingest(f"{live_server.url}/usage/compute_hours", secret, [bad])
    assert (status, body["rejected"]) == (422, 1)

    sign_in(page, live_server, email=ADMIN_EMAIL)
    page.goto(live_server.url + "/usage-events/compute_hours/")
    expect(page.get_by_role("heading", name="Compute hours")).to_be_visible()

    # The records table lists the four accepted records, newest id first.
    rows = page.locator("#records-table tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("cus_umbrella")
    expect(rows.last).to_contain_text("cus_acme")
    expect(page.locator("#records-table")).to_contain_text('"region":"eu-west-1"')
    expect(page.locator("#records-table")).to_contain_text("job-0003")

    # The chart has a bar per hour, and the four records stand in the current (or previous) hour.
    chart = page.locator("svg#volume-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar")).to_have_count(48)
    drawn = chart.locator("rect.bar:not([data-count='0'])")
    expect(drawn).to_have_count(1)
    assert float(drawn.get_attribute("height") or 0) > 0
    assert drawn.get_attribute("data-count") == "4"
    expect(chart.locator("g.bucket title").last).to_contain_text("UTC")
    assert "4 records" in " ".join(chart.locator("g.bucket title").all_text_contents())

    # The error log shows the rejected record and why.
    errors = page.locator("#errors-table")
    expect(errors.locator("tbody tr")).to_have_count(1)
    expect(errors).to_contain_text("data.cpu_usage_hours: Expected Float64, got string.")
    expect(errors).to_contain_text("data.note")
    expect(errors).to_contain_text("cus_broken")
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 1366, f"the page overflows sideways ({page_width}px)"
    screenshot("event_page_01_overview")

    # The customer filter narrows the table; the day view draws 30 bars.
    page.locator("#id_customer_id").fill("cus_globex")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#records-table tbody tr")).to_have_count(1)
    expect(page.locator("#records-table")).to_contain_text("cus_globex")
    page.get_by_role("link", name="Day", exact=True).click()
    expect(page.locator("svg#volume-chart rect.bar")).to_have_count(30)
    expect(page.locator("#id_customer_id")).to_have_value("cus_globex")
    screenshot("event_page_02_filtered_by_customer_daily")

    # A bad time filter is explained next to the field, not answered with an error page.
    page.goto(live_server.url + "/usage-events/compute_hours/?start=2026-11-20T10:00&end=2026-11-20T09:00")
    expect(page.locator("#filter-errors")).to_be_visible()
    expect(page.locator("#records-filters")).to_contain_text("must be later than")
    screenshot("event_page_03_bad_filter")

    # Past one page, "Older →" pages back by id and "Newest" returns; the filters travel with the links.
    more = [{**records[0], "customer_id": "cus_bulk", "idempotency_key": f"bulk-{i}"} for i in range(60)]
    assert ingest(f"{live_server.url}/usage/compute_hours", secret, more)[1]["accepted"] == 60
    page.goto(live_server.url + "/usage-events/compute_hours/")
    expect(page.locator("#records-table tbody tr")).to_have_count(50)
    expect(page.get_by_role("link", name="Newest")).to_have_count(0)
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("#records-table tbody tr")).to_have_count(14)
    expect(page.locator("#records-table tbody tr").last).to_contain_text("cus_acme")
    expect(page.get_by_role("link", name="Older →")).to_have_count(0)
    # The link jumps to #records: let that scroll finish, or the full-page screenshot catches it midway.
    page.wait_for_function("window.scrollY > 0")
    screenshot("event_page_04_older_page")
    page.get_by_role("link", name="Newest").click()
    expect(page.locator("#records-table tbody tr")).to_have_count(50)
    expect(page.locator("#records-table tbody tr").first).to_contain_text("cus_bulk")
