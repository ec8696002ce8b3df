"""`make run`'s seed shows billing at once: a customer, a tiered metered pricing on the demo metric, a flat
monthly fee and an active contract charging both; a second run adds nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from django.core.management import call_command

from billing.models import Contract, Customer, Pricing, Product
from zenskar_site.accounts.models import AuditEntry


def test_the_demo_seed_adds_billing_once(db: None, settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path

    call_command("seeddemo", stdout=io.StringIO())
    counts = [Customer.objects.count(), Product.objects.count(), Pricing.objects.count(), Contract.objects.count()]
    call_command("seeddemo", stdout=io.StringIO())

    assert counts == [1, 2, 2, 1]
    assert [
        Customer.objects.count(),
        Product.objects.count(),
        Pricing.objects.count(),
        Contract.objects.count(),
    ] == counts
    customer = Customer.objects.get()
    assert customer.external_id == "cus_123"
    contract = Contract.objects.get()
    assert contract.status == "active"
    assert contract.customer == customer
    assert contract.anchor_date.day == 1
    pricings = {link.pricing.pricing_type: link.pricing for link in contract.phases.get().phase_pricings.all()}
    assert set(pricings) == {"tiered", "flat_fee"}
    assert pricings["tiered"].metric is not None
    assert pricings["tiered"].metric.slug == "cpu_hours"
    assert pricings["tiered"].product.type == "metered"
    assert pricings["flat_fee"].cadence == "P1M"
    assert AuditEntry.objects.filter(object_type="contract", action="contract.create").count() == 1
