"""Builders shared by the invoice tests: a contract with one pricing of each model, metric values."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from typing import Any

import pytest

from billing.catalogue import pricing_create
from billing.contracts import contract_create
from billing.models import Contract, Customer, Pricing
from metrics.models import BillableMetric, MetricValue
from tests.billing.conftest import customer_make, metric_make, product_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

UTC = dt.UTC


def day(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, tzinfo=UTC)


def value_make(
    metric: BillableMetric, customer_id: str, start: dt.datetime, amount: str, region: str | None = None
) -> MetricValue:
    dimension = {"region": region} if region is not None else None
    return MetricValue.objects.create(
        metric=metric,
        customer_id=customer_id,
        period_start=start,
        period_end=start + dt.timedelta(days=1),
        dimension=dimension,
        dimension_key="" if dimension is None else f"region={region}",
        computed_value=amount,
        metric_version=1,
    )


def pricing_make(
    organisation: Organisation,
    name: str,
    pricing_data: dict[str, Any],
    metric: BillableMetric | None = None,
    **extra: Any,
) -> Pricing:
    product = product_make(organisation, type="metered" if metric else "fixed", name=name)
    data: dict[str, Any] = {"name": name, "pricing_data": pricing_data, **extra}
    if metric is not None:
        data["quantity"] = {"type": "metered", "aggregate_id": metric.slug, "unit": "unit"}
    return pricing_create(actor=system_actor(organisation=organisation), product_id=product.id, data=data)


def contract_make(
    organisation: Organisation, customer: Customer, pricings: list[Pricing], *, start: str = "2024-01-01", **extra: Any
) -> Contract:
    return contract_create(
        actor=system_actor(organisation=organisation),
        data={
            "name": "Main",
            "currency": "USD",
            "customer_id": str(customer.id),
            "status": "active",
            "start_date": start,
            "phases": [{"name": "Main", "pricings": [{"pricing_id": str(p.id)} for p in pricings]}],
            **extra,
        },
    )


def all_models_contract(
    organisation: Organisation, *, start: str = "2024-01-01", anchor: str | None = None
) -> Contract:
    """Flat 49; per-unit 1.23 and volume on `api_calls`; tiered, package and matrix on `cpu_hours` (by region)."""
    cpu = metric_make(organisation, slug="cpu_hours")
    api = metric_make(organisation, slug="api_calls")
    customer = customer_make(organisation, external_id="cus_1", tax_rate="10", payment_terms_days=15)
    pricings = [
        pricing_make(organisation, "Platform", {"pricing_type": "flat_fee", "unit_amount": "49"}),
        pricing_make(organisation, "Calls", {"pricing_type": "per_unit", "unit_amount": "1.23"}, api),
        pricing_make(
            organisation,
            "Compute tiered",
            {
                "pricing_type": "tiered",
                "unit_amount": ["0.10", "0.08"],
                "up_to": [100, None],
                "flat_amount": ["5", "0"],
            },
            cpu,
        ),
        pricing_make(
            organisation,
            "Calls volume",
            {
                "pricing_type": "volume",
                "unit_amount": ["1.00", "0.75"],
                "up_to": [10, None],
                "flat_amount": ["0", "2.50"],
            },
            api,
        ),
        pricing_make(
            organisation, "Compute packs", {"pricing_type": "package", "package_size": 100, "unit_amount": "9.99"}, cpu
        ),
        pricing_make(
            organisation,
            "Compute by region",
            {
                "pricing_type": "matrix",
                "dimensions": [{"name": "Region", "column_name": "region"}],
                "values": [
                    {"dimension_values": ["us"], "unit_amount": "0.015"},
                    {"dimension_values": ["eu"], "unit_amount": "0.025"},
                ],
                "default_unit_amount": "0.01",
            },
            cpu,
        ),
    ]
    extra = {"anchor_date": anchor} if anchor else {}
    contract = contract_make(organisation, customer, pricings, start=start, **extra)
    # January 2024: cpu us 150 + eu 100.5 = 250.5; api 12.345. Values outside January must not count.
    value_make(cpu, "cus_1", day(2024, 1, 3), "150", "us")
    value_make(cpu, "cus_1", day(2024, 1, 20), "100.5", "eu")
    value_make(cpu, "cus_1", day(2023, 12, 31), "1000", "us")
    value_make(cpu, "cus_1", day(2024, 2, 1), "1000", "us")
    value_make(cpu, "someone_else", day(2024, 1, 5), "1000", "us")
    value_make(api, "cus_1", day(2024, 1, 31), "12", None)
    value_make(api, str(customer.id), day(2024, 1, 10), "0.345", None)  # by the customer's id: also theirs
    return contract


def pdf_text(content: bytes) -> str:
    if shutil.which("pdftotext") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdftotext is missing (make pdf-tools installs poppler-utils)")
        pytest.skip("pdftotext is missing: `make pdf-tools` installs poppler-utils")
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(content)
        handle.flush()
        found = subprocess.run(["pdftotext", "-layout", handle.name, "-"], capture_output=True, check=True, text=True)
    return found.stdout
