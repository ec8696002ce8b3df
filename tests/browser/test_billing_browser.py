"""Billing in a real browser (SPEC §8): a customer, a product with tiered pricing (its chart drawn from the
rating engine as the tiers are typed), a plan, a contract from the plan; usage ingested through the real
endpoint shows, priced, as the customer's current-period usage."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from billing.models import Contract, Customer, Plan, Pricing
from metrics.definitions import metric_create
from tests.browser.conftest import SCREENSHOTS
from tests.browser.pages import PASSWORD, sign_in
from tests.factories import api_key_make, organisation_make, usage_event_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "bill@example.com"
# Where the screenshots go: the browser tests' folder (git-ignored), or BILLING_SCREENS when set.
SCREENS = Path(os.environ.get("BILLING_SCREENS") or SCREENSHOTS)
UPDATE_TIMEOUT_SECONDS = 15


@pytest.fixture
def org(transactional_db: None) -> Organisation:
    return organisation_make(name="Billing Org", admin_email=ADMIN_EMAIL, password=PASSWORD)


@pytest.fixture
def shot(page: Page) -> Callable[[str], Path]:
    SCREENS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def ingest(live_server: Any, org: Organisation, secret: str, records: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        live_server.url + "/usage/compute_hours",
        data=json.dumps(records).encode(),
        headers={"Content-Type": "application/json", "x-api-key": secret, "organisation": str(org.id)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert (response.status, body["accepted"]) == (202, len(records)), body


def record(customer: str, hours: float) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    moment = max(now - dt.timedelta(minutes=2), now.replace(hour=0, minute=0, second=0, microsecond=0))
    return {
        "customer_id": customer,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "data": {"cpu_usage_hours": hours, "region": "eu"},
    }


def fill_tier(page: Page, index: int, up_to: str, unit_amount: str, flat: str = "") -> None:
    row = page.locator("#tier-rows tr.tier-row").nth(index)
    row.locator("input[name=tier_up_to]").fill(up_to)
    row.locator("input[name=tier_unit_amount]").fill(unit_amount)
    if flat:
        row.locator("input[name=tier_flat_amount]").fill(flat)


def test_customer_tiered_product_plan_contract_and_current_usage(
    page: Page, live_server: Any, org: Organisation, shot: Callable[[str], Path]
) -> None:
    usage_event_make(organisation=org, api_slug="compute_hours", name="Compute hours")
    metric_create(
        actor=system_actor(organisation=org),
        body={
            "name": "CPU hours",
            "slug": "cpu_hours",
            "usage_event": "compute_hours",
            "aggregation": "sum",
            "field": "cpu_usage_hours",
            "granularity": "day",
        },
    )
    secret = api_key_make(organisation=org, scope="ingest").secret
    # Usage of an id no customer has yet: listed on the customers page so it is not lost.
    ingest(live_server, org, secret, [record("cus_acme", 40), record("cus_stray", 1)])
    sign_in(page, live_server, email=ADMIN_EMAIL)

    # --- a customer ---
    page.locator("nav.sidebar").get_by_role("link", name="Customers").click()
    expect(page.get_by_role("heading", name="Customers", exact=True)).to_be_visible()
    expect(page.locator("nav.sidebar .nav-link.active")).to_have_text("Customers")
    expect(page.locator("#customers-empty")).to_be_visible()
    expect(page.locator("#unmatched-table")).to_contain_text("cus_acme")
    expect(page.locator("#unmatched-table")).to_contain_text("cus_stray")
    shot("billing_01_customers_empty")
    page.get_by_role("link", name="+ ADD CUSTOMER").click()
    page.get_by_role("button", name="SAVE CUSTOMER").click()
    expect(page.locator('[data-errors-for="customer_name"] .error')).to_have_text("This field may not be blank.")
    shot("billing_02_customer_error")
    page.locator("#id_customer_name").fill("Acme Corp")
    page.locator("#id_external_id").fill("cus_acme")
    page.locator("#id_email").fill("billing@acme.test")
    page.locator("#id_address_city").fill("Springfield")
    page.locator("#id_tax_rate").fill("8.25")
    page.get_by_role("button", name="SAVE CUSTOMER").click()
    expect(page.get_by_role("heading", name="Acme Corp")).to_be_visible()
    expect(page.locator("#usage-empty")).to_be_visible()
    customer = Customer.objects.get(organisation=org, external_id="cus_acme")
    shot("billing_03_customer_no_contract")

    # --- a metered product with tiered pricing; the chart follows the tiers as they are typed ---
    page.locator("nav.sidebar").get_by_role("link", name="Products").click()
    expect(page.locator("#products-empty")).to_be_visible()
    page.get_by_role("link", name="+ ADD PRODUCT").click()
    page.locator("#id_name").fill("Compute")
    page.locator("#id_type").select_option("metered")
    page.locator("#id_sku").fill("COMPUTE-1")
    page.get_by_role("button", name="SAVE PRODUCT").click()
    expect(page.get_by_role("heading", name=re.compile("^Compute"))).to_be_visible()
    expect(page.locator("#pricings-empty")).to_be_visible()
    page.get_by_role("link", name="+ ADD PRICING").click()
    expect(page.locator("#pricing-form[data-ready=true]")).to_have_count(1)
    page.locator("#id_name").fill("CPU usage")
    page.locator("#id_pricing_type").select_option("tiered")
    expect(page.locator("#tiers-section")).to_be_visible()
    expect(page.locator("#row-unit_amount")).to_be_hidden()
    fill_tier(page, 0, "100", "0.10", "5")
    fill_tier(page, 1, "", "0.08")
    page.locator("#add-tier").click()
    # Three rows now: the middle one needs a bound; the chart says what is wrong, next to the tiers.
    fill_tier(page, 1, "", "0.08")
    fill_tier(page, 2, "", "0.05")
    expect(page.locator('[data-errors-for="tiers"] .error')).to_have_text(
        "Tier 2, up to: Only the last tier's up_to may be null."
    )
    expect(page.locator("#pricing-chart")).to_have_attribute("data-state", "error")
    shot("billing_04_pricing_tier_error")
    fill_tier(page, 1, "1000", "0.08")
    expect(page.locator("#pricing-chart")).to_have_attribute("data-state", "drawn")
    expect(page.locator('[data-errors-for="tiers"] .error')).to_have_count(0)
    chart = page.locator("#pricing-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("line.tier-bound")).to_have_count(2)
    points = chart.locator("circle.point")
    assert points.count() > 50
    box = chart.bounding_box()
    assert box is not None
    assert box["width"] > 300
    assert box["height"] > 150
    amounts = dict(points.evaluate_all("ps => ps.map(p => [p.dataset.quantity, p.dataset.amount])"))
    # Graduated: 100 x 0.10 + 5, then 900 x 0.08 more; the engine's exact figures.
    assert Decimal(amounts["100"]) == Decimal("15")
    assert Decimal(amounts["1000"]) == Decimal("87")
    assert Decimal(amounts["1500"]) == Decimal("112")
    page.locator("#id_metric").select_option("cpu_hours")
    page.locator("#id_unit").fill("CPU hour")
    shot("billing_05_pricing_chart")
    page.get_by_role("button", name="SAVE PRICING").click()
    expect(page.locator(".message.success")).to_contain_text("CPU usage")
    expect(page.locator("#pricings-table")).to_contain_text("0.1 + 5 flat up to 100; 0.08 up to 1000; 0.05 above")
    pricing = Pricing.objects.get(organisation=org, name="CPU usage")
    assert pricing.pricing_data["up_to"] == ["100", "1000", None]
    shot("billing_06_product_pricings")

    # --- a plan with that pricing ---
    page.locator("nav.sidebar").get_by_role("link", name="Plans").click()
    page.get_by_role("link", name="+ ADD PLAN").click()
    page.locator("#id_name").fill("Usage plan")
    page.locator("#id_currency").fill("USD")
    page.locator("#plan-form").get_by_text("Compute: CPU usage").click()
    page.get_by_role("button", name="SAVE PLAN").click()
    expect(page.get_by_role("heading", name=re.compile("Usage plan"))).to_be_visible()
    expect(page.locator("#plan-pricings")).to_contain_text("CPU usage")
    plan = Plan.objects.get(organisation=org, name="Usage plan")
    shot("billing_07_plan")

    # --- a contract from the plan, from this month on ---
    page.get_by_role("link", name="+ CONTRACT FROM THIS PLAN").click()
    expect(page.locator("#id_plan_id")).to_have_value(str(plan.id))
    page.locator("#id_name").fill("Acme 2026")
    page.locator("#id_customer_id").select_option(str(customer.id))
    month_start = dt.datetime.now(dt.UTC).date().replace(day=1)
    page.locator("#id_start_date").fill(month_start.isoformat())
    page.locator("#id_status").select_option("draft")
    shot("billing_08_contract_form")
    page.get_by_role("button", name="SAVE CONTRACT").click()
    expect(page.get_by_role("heading", name=re.compile("Acme 2026"))).to_be_visible()
    contract = Contract.objects.get(organisation=org, name="Acme 2026")
    assert [link.pricing_id for link in contract.phases.get().phase_pricings.all()] == [pricing.id]
    expect(page.locator("#phase-timeline .phase-bar")).to_have_count(1)
    expect(page.locator("#contract-phases")).to_contain_text("CPU usage")
    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".message.success")).to_have_text("Contract activated.")
    expect(page.locator("h1 .contract-status")).to_have_text("Active")
    expect(page.locator("#amendments-table")).to_contain_text("status: draft → active")
    shot("billing_09_contract")

    # --- usage arrives; the customer's page shows this period's quantity and amount so far ---
    ingest(live_server, org, secret, [record("cus_acme", 110)])
    page.locator("#contract-facts").get_by_role("link", name="Acme Corp").click()
    row = page.locator('#usage-table tr[data-metric="cpu_hours"]')
    deadline = time.monotonic() + UPDATE_TIMEOUT_SECONDS
    # 150 CPU hours: 100 x 0.10 + 5 + 50 x 0.08 = 19.00 USD.
    while "150" not in (row.locator("td.quantity").text_content() or ""):
        assert time.monotonic() < deadline, row.text_content()
        page.wait_for_timeout(500)
        page.reload()
    expect(row.locator("td.quantity")).to_contain_text("150")
    expect(row.locator("td.money")).to_have_text("19.00 USD")
    expect(page.locator("#customer-contracts")).to_contain_text("Acme 2026")
    shot("billing_10_customer_usage")

    page.locator("nav.sidebar").get_by_role("link", name="Customers").click()
    expect(page.locator("#customers-table")).to_contain_text("Acme Corp")
    expect(page.locator("#unmatched-table")).not_to_contain_text("cus_acme")
    expect(page.locator("#unmatched-table")).to_contain_text("cus_stray")
    shot("billing_11_customers")
    page.locator("nav.sidebar").get_by_role("link", name="Contracts").click()
    expect(page.locator("#contracts-table")).to_contain_text("Acme 2026")
    shot("billing_12_contracts")
