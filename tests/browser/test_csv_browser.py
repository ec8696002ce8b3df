"""Usage > Usage data in a real browser (SPEC §6): upload a file, map its columns, preview the errors,
confirm, and watch the import's progress."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any
from unittest import mock

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import PASSWORD, Screenshot, sign_in
from tests.factories import organisation_make, usage_event_make
from usage.csv.imports import csv_import_run
from usage.models import CsvImport, CsvImportStatus, UsageRecord
from zenskar_site.accounts.models import Organisation

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "ada@example.com"


@pytest.fixture
def org(transactional_db: None) -> Organisation:
    return organisation_make(name="CSV Org", admin_email=ADMIN_EMAIL, password=PASSWORD)


def csv_file(name: str, header: list[str], rows: list[list[str]]) -> dict[str, Any]:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return {"name": name, "mimeType": "text/csv", "buffer": text.getvalue().encode()}


def test_upload_map_preview_confirm_and_progress(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    usage_event_make(organisation=org, api_slug="compute_hours", name="Compute hours")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=60)

    def when(i: int) -> str:
        return (start + dt.timedelta(minutes=20 * i)).isoformat().replace("+00:00", "Z")

    sign_in(page, live_server, email=ADMIN_EMAIL)
    page.locator(".sidebar").get_by_role("link", name="Usage data").click()
    expect(page.get_by_role("heading", name="Usage data")).to_be_visible()
    expect(page.locator("#imports-empty")).to_be_visible()
    screenshot("csv_01_upload")

    # A file with mistakes: every bad row is named, and nothing can be confirmed.
    bad = csv_file(
        "march-usage.csv",
        ["customer_id", "timestamp", "cpu_usage_hours", "region"],
        [
            ["cus_acme", when(1), "1.5", "eu-west-1"],
            ["cus_globex", when(2), "lots", ""],
            ["cus_initech", "last tuesday", "2", "us-east-1"],
            ["", when(4), "3", ""],
            ["cus_acme", when(5), "4"],
        ],
    )
    page.locator("#id_file").set_input_files(bad)
    page.get_by_role("button", name="Upload and map columns").click()
    expect(page.get_by_role("heading", name="Map columns")).to_be_visible()
    page.get_by_role("button", name="Validate 5 rows").click()
    expect(page.locator("#count-invalid")).to_have_text("4")
    errors = page.locator("#errors-table tbody tr")
    expect(errors).to_have_count(4)
    expect(errors.nth(0)).to_contain_text("Expected Float64, got string.")
    expect(page.locator("#confirm-submit")).to_be_disabled()
    assert UsageRecord.objects.count() == 0
    screenshot("csv_03_preview_errors")

    # A good file whose columns need mapping by hand.
    rows = [
        [f"cus_{i % 7}", when(i), f"{(i % 13) * 0.25:g}", ["eu-west-1", "us-east-1", ""][i % 3], f"batch {i // 100}"]
        for i in range(3000)
    ]
    good = csv_file("history-2026.csv", ["Customer", "When", "CPU hours", "Region", "Notes"], rows)
    page.locator(".sidebar").get_by_role("link", name="Usage data").click()
    page.locator("#id_file").set_input_files(good)
    page.get_by_role("button", name="Upload and map columns").click()
    expect(page.get_by_role("heading", name="Map columns")).to_be_visible()
    expect(page.get_by_label("Customer")).to_have_value("customer_id")
    expect(page.get_by_label("Region")).to_have_value("data.region")
    page.get_by_label("When").select_option("timestamp")
    page.get_by_label("CPU hours").select_option("data.cpu_usage_hours")
    screenshot("csv_02_mapping")

    page.get_by_role("button", name="Validate 3,000 rows").click()
    expect(page.locator("#count-valid")).to_have_text("3,000")
    expect(page.locator("#preview-verdict")).to_contain_text("Every row is valid")
    expect(page.locator("#confirm-submit")).to_be_enabled()
    screenshot("csv_03_preview_ok")

    # Confirmed, the import waits for a worker; here the test is the worker, so progress can be seen.
    with mock.patch("usage.csv.imports._enqueue"):
        page.get_by_role("button", name="Confirm and import 3,000 rows").click()
        expect(page.locator("#import-status")).to_have_text("Importing")
    csv_import = CsvImport.objects.get(filename="history-2026.csv")
    assert UsageRecord.objects.count() == 0

    def watch(done: int, total: int) -> None:
        if done == 1000:
            page.reload()
            expect(page.locator("#import-count")).to_contain_text("1,000 of 3,000 rows (33%)")
            assert page.locator("#import-bar").get_attribute("value") == "1000"
            screenshot("csv_04_progress")

    finished = csv_import_run(import_id=csv_import.id, progress=watch)

    assert finished is not None
    assert finished.status == CsvImportStatus.DONE
    # The page refreshes itself and shows the result.
    expect(page.locator("#import-result")).to_contain_text("Done: 3,000 records stored", timeout=8000)
    expect(page.locator("#import-status")).to_have_text("Done")
    screenshot("csv_05_done")

    page.locator(".sidebar").get_by_role("link", name="Usage data").click()
    expect(page.locator("#imports-table tbody tr")).to_have_count(2)
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 1366, f"the page overflows sideways ({page_width}px)"
    screenshot("csv_06_usage_data")
