"""The dashboard in a real browser (SPEC §7): + ADD USAGE EVENT, its validation errors, and API keys."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import PASSWORD, Screenshot, sign_in
from tests.factories import organisation_make
from usage.models import UsageEvent
from zenskar_site.accounts.models import ApiKey, Organisation

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "ada@example.com"


@pytest.fixture
def org(transactional_db: None) -> Organisation:
    return organisation_make(name="Browser Org", admin_email=ADMIN_EMAIL, password=PASSWORD)


def open_add_usage_event(page: Page) -> None:
    page.locator("nav.sidebar").get_by_role("link", name="Usage events").click()
    expect(page.get_by_role("heading", name="Usage events", exact=True)).to_be_visible()
    page.get_by_role("link", name="+ ADD USAGE EVENT").click()
    expect(page.get_by_role("heading", name="Add usage event")).to_be_visible()


def add_field(page: Page, name: str, type_: str, *, required: bool = True) -> None:
    rows = page.locator("tr.field-row")
    before = rows.count()
    page.locator("#add-field").click()
    expect(rows).to_have_count(before + 1)
    row = rows.nth(before)
    expect(row.locator(".field-name")).to_be_focused()
    row.locator(".field-name").fill(name)
    row.locator(".field-type").select_option(type_)
    if not required:
        row.locator(".field-required").uncheck()
    expect(row.locator(".field-required")).to_be_checked(checked=required)


def preview_json(page: Page) -> dict[str, Any]:
    return json.loads(page.locator("#schema-preview").text_content() or "")


def row_for_field(page: Page, name: str) -> Any:
    rows = page.locator("tr.field-row")
    for i in range(rows.count()):
        if rows.nth(i).locator(".field-name").input_value() == name:
            return rows.nth(i)
    raise AssertionError(f"no field row named {name!r}")


def test_add_usage_event_with_three_fields(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    sign_in(page, live_server, email=ADMIN_EMAIL, screenshot=screenshot)
    screenshot("02_usage_events_empty")
    open_add_usage_event(page)
    screenshot("03_add_usage_event_empty_form")

    # The slug follows the name as it is typed.
    name_input, slug_input = page.locator("#id_name"), page.locator("#id_api_slug")
    expect(page.locator("label[for=id_name]")).to_have_text("Usage Event Name")
    expect(page.locator("label[for=id_api_slug]")).to_have_text("API Slug Endpoint")
    name_input.press_sequentially("GPU")
    expect(slug_input).to_have_value("gpu")
    name_input.press_sequentially(" Hours")
    expect(slug_input).to_have_value("gpu_hours")

    add_field(page, "hours", "Float64")
    add_field(page, "gpu_model", "String", required=False)
    add_field(page, "job_count", "Int64")

    expected = {
        "customer_id": "String",
        "timestamp": "DateTime64",
        "data": {"hours": "Float64", "gpu_model": "Nullable(String)", "job_count": "Int64"},
    }
    expect(page.locator("#schema-preview")).to_contain_text('"gpu_model": "Nullable(String)"')
    assert preview_json(page) == expected
    assert json.loads(page.locator("#id_dataschema").input_value()) == expected
    screenshot("04_add_usage_event_filled")

    page.get_by_role("button", name="ADD USAGE EVENT", exact=True).click()
    expect(page.get_by_role("heading", name="GPU Hours")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/usage-events/gpu_hours/$"))
    screenshot("05_usage_event_detail")

    endpoint = page.locator("#endpoint-url").text_content() or ""
    assert endpoint.startswith(live_server.url)
    assert endpoint.endswith("/usage/gpu_hours")
    assert endpoint == f"{live_server.url}/usage/gpu_hours"

    curl = page.locator("#curl-example").text_content() or ""
    assert "curl -X POST" in curl
    assert endpoint in curl
    assert f"organisation: {org.id}" in curl
    assert "x-api-key" in curl
    # The example is a real shell command: its body is JSON with the three fields.
    argv = shlex.split(curl.replace("\\\n", " "))
    assert argv[:4] == ["curl", "-X", "POST", endpoint]
    body = json.loads(argv[argv.index("--data-raw") + 1])
    assert set(body) >= {"customer_id", "timestamp", "data"}
    assert set(body["data"]) == {"hours", "gpu_model", "job_count"}

    assert json.loads(page.locator("#schema-json").text_content() or "") == expected

    event = UsageEvent.objects.get(organisation=org, api_slug="gpu_hours")
    assert event.name == "GPU Hours"
    assert event.dataschema == expected

    # It is listed under Usage > Usage events.
    page.locator("nav.sidebar").get_by_role("link", name="Usage events").click()
    expect(page.get_by_role("link", name="GPU Hours")).to_be_visible()
    expect(page.locator("table")).to_contain_text("/usage/gpu_hours")
    screenshot("06_usage_events_list")


def test_add_usage_event_shows_errors_next_to_their_fields(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    sign_in(page, live_server, email=ADMIN_EMAIL)
    open_add_usage_event(page)

    # A bad slug: the error sits next to the slug field, the rows survive the round trip.
    page.locator("#id_name").fill("Bad Slug Event")
    page.locator("#id_api_slug").fill("bad slug!")
    add_field(page, "good_field", "Int64")
    page.get_by_role("button", name="ADD USAGE EVENT", exact=True).click()

    slug_error = page.locator(".field-error[data-for=api_slug]")
    expect(slug_error).to_be_visible()
    expect(slug_error).to_contain_text("API slug")
    expect(page.locator("#row-api_slug")).to_contain_text("letters, digits, _ or -")
    expect(page.locator("#id_api_slug")).to_have_value("bad slug!")
    expect(page.locator("tr.field-row")).to_have_count(1)
    expect(page.locator("tr.field-row .field-name")).to_have_value("good_field")
    assert preview_json(page)["data"] == {"good_field": "Int64"}
    screenshot("07_error_bad_slug")
    assert not UsageEvent.objects.exists()

    # A bad field name: the error sits in that field's row, not in the others.
    page.locator("#id_api_slug").fill("bad_field_event")
    add_field(page, "Bad-Name", "String")
    page.get_by_role("button", name="ADD USAGE EVENT", exact=True).click()
    page.wait_for_load_state()
    screenshot("08_error_bad_field_name")

    expect(page.locator("tr.field-row")).to_have_count(2)
    bad_row = row_for_field(page, "Bad-Name")
    expect(bad_row.locator(".row-error")).to_be_visible()
    expect(bad_row.locator(".row-error")).to_contain_text("Field names are 1-63 characters")
    expect(row_for_field(page, "good_field").locator(".row-error")).to_have_text("")
    expect(page.locator(".field-error[data-for=api_slug]")).to_have_count(0)
    assert not UsageEvent.objects.exists()


def test_api_key_is_shown_once_and_can_be_revoked(
    page: Page, live_server: Any, org: Organisation, screenshot: Screenshot
) -> None:
    sign_in(page, live_server, email=ADMIN_EMAIL)
    page.locator("nav.sidebar").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(re.compile(r"/settings/api-keys/$"))
    expect(page.get_by_text("No active keys.")).to_be_visible()

    page.locator("#id_name").fill("Ingest from billing-worker")
    page.locator("#id_scope").select_option("ingest")
    page.get_by_role("button", name="Create API key").click()

    secret_box = page.locator("#created-secret")
    expect(secret_box).to_be_visible()
    secret = (secret_box.text_content() or "").strip()
    assert secret.startswith("zk_")
    key = ApiKey.objects.get(organisation=org)
    assert key.name == "Ingest from billing-worker"
    assert key.scope == "ingest"
    assert secret.startswith(f"zk_{key.prefix}_")
    row = page.locator("#api-keys-table tbody tr", has_text=key.prefix)
    expect(row).to_contain_text("Ingest from billing-worker")
    screenshot("09_api_key_created")

    # Shown once: opening the page again does not show it. (A GET, not page.reload(): the secret is
    # rendered in the POST's response, so reloading would re-send the form and create a second key.)
    page.goto(live_server.url + "/settings/api-keys/")
    assert ApiKey.objects.filter(organisation=org).count() == 1
    expect(page.locator("#created-secret")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text(secret)
    expect(row).to_be_visible()
    screenshot("10_api_keys_after_reload")

    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".message.success")).to_contain_text(f"API key {key.prefix} revoked")
    expect(page.locator("#api-keys-table tbody tr", has_text=key.prefix)).to_have_count(0)
    expect(page.get_by_text("No active keys.")).to_be_visible()
    assert len(dialogs) == 1
    assert key.prefix in dialogs[0]
    key.refresh_from_db()
    assert key.revoked_at is not None
    screenshot("11_api_key_revoked")
