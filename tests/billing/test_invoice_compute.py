"""SPEC §8-§9: an invoice's lines from a contract's pricings and metric values, to the cent.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.invoicing.compute import invoice_compute
from tests.billing.invoice_helpers import all_models_contract
from zenskar_site.accounts.models import Organisation

d = dt.date


@pytest.mark.django_db
def test_every_pricing_model_line_equals_the_hand_computed_amount(organisation: Organisation) -> None:
    contract = all_models_contract(organisation)

    result = invoice_compute(contract=contract, period_start=d(2024, 1, 1), period_end=d(2024, 2, 1))

    amounts = {line.description.split(": ")[1]: line.amount for line in result.lines}
    assert amounts == {
        "Platform": Decimal("49.00"),
        "Calls": Decimal("15.18"),  # 12.345 x 1.23 = 15.18435
        "Compute tiered": Decimal("27.04"),  # 100 x 0.10 + 5 + 150.5 x 0.08 = 27.04
        "Calls volume": Decimal("11.76"),  # 12.345 x 0.75 + 2.50 = 11.75875
        "Compute packs": Decimal("29.97"),  # ceil(250.5 / 100) = 3 x 9.99
        "Compute by region": Decimal("4.76"),  # 150 x 0.015 + 100.5 x 0.025 = 4.7625
    }
    assert result.subtotal == Decimal("137.71")
    assert result.tax == Decimal("13.77")  # 10% of 137.71 = 13.771
    assert result.total == Decimal("151.48")
    by_name = {line.description.split(": ")[1]: line for line in result.lines}
    assert by_name["Calls"].quantity == "12.345"
    assert by_name["Calls"].unit_amount == "1.23"
    tiers = by_name["Compute tiered"].breakdown["parts"]
    assert [(p["quantity"], p["unit_amount"], p["amount"]) for p in tiers] == [
        ("100", "0.1", "15"),
        ("150.5", "0.08", "12.04"),
    ]
    cells = by_name["Compute by region"].breakdown["parts"]
    assert {tuple(c["dimension_values"]): c["amount"] for c in cells} == {("eu",): "2.5125", ("us",): "2.25"}
    assert by_name["Compute packs"].breakdown["parts"][0]["packages"] == "3"
    assert all(line.period_start == d(2024, 1, 1) and line.period_end == d(2024, 2, 1) for line in result.lines)


@pytest.mark.django_db
def test_a_first_partial_period_prorates_the_fixed_fee_and_bills_the_usage_in_it(organisation: Organisation) -> None:
    contract = all_models_contract(organisation, start="2024-01-15", anchor="2024-01-01")

    result = invoice_compute(contract=contract, period_start=d(2024, 1, 15), period_end=d(2024, 2, 1))

    by_name = {line.description.split(": ")[1]: line for line in result.lines}
    assert by_name["Platform"].amount == Decimal("26.87")  # 49 x 17/31 = 26.870967...
    assert by_name["Platform"].breakdown["proration"] == {"days": 17, "period_days": 31, "full_amount": "49"}
    # Only the eu value (Jan 20) lies in [Jan 15, Feb 1): 100.5 hours.
    assert by_name["Compute tiered"].quantity == "100.5"
    assert by_name["Compute tiered"].amount == Decimal("15.04")  # 100 x 0.10 + 5 + 0.5 x 0.08
    assert by_name["Calls"].quantity == "12"  # the Jan 10 value is before the contract


@pytest.mark.django_db
def test_a_period_with_no_usage_bills_zero_quantities_not_missing_lines(organisation: Organisation) -> None:
    contract = all_models_contract(organisation)

    result = invoice_compute(contract=contract, period_start=d(2024, 3, 1), period_end=d(2024, 4, 1))

    by_name = {line.description.split(": ")[1]: line for line in result.lines}
    assert by_name["Platform"].amount == Decimal("49.00")
    assert by_name["Calls"].quantity == "0"
    assert by_name["Compute tiered"].amount == Decimal("5.00")  # the first tier's flat amount at q = 0
    assert len(result.lines) == 6
