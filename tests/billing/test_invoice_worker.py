"""Issue 12's acceptance, as production runs it: PostgreSQL, a private Redis, a real Celery worker with
beat embedded (not eager). Records go through `POST /usage/{slug}`; the worker refreshes the metrics,
beat creates the draft of the closed period, and the draft follows late and voided records by itself.

The contract holds one pricing of each model over last month (the closed period): flat, per unit,
tiered, volume, package and matrix. Every amount below is computed by hand in its comment.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from billing.invoicing.models import Invoice, InvoiceLine
from billing.invoicing.services import GENERATE_BATCH, invoices_generate_due
from billing.tasks import invoices_generate_due_task
from metrics.definitions import metric_create
from metrics.models import MetricValue
from tests.billing.conftest import customer_make
from tests.billing.invoice_helpers import contract_make, pricing_make
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.processes import PrivateRedis, celery_app_on_broker, celery_worker, celery_worker_with_beat, private_redis
from usage.corrections import record_void
from usage.models import UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation
from zenskar_site.celery import app

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

UTC = dt.UTC


@pytest.fixture(autouse=True)
def broker() -> Iterator[PrivateRedis]:
    with private_redis() as redis, celery_app_on_broker(redis.url):
        yield redis


@pytest.fixture(autouse=True)
def not_eager(settings: Any) -> Iterator[None]:
    settings.INGEST_RATE_LIMIT = 0
    settings.API_RATE_LIMIT = 0
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield
    finally:
        app.conf.task_always_eager = eager


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> float:
    """Seconds until `condition` held; fails the test past `seconds`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.2)
    return time.monotonic() - started


def last_month() -> tuple[dt.date, dt.date]:
    this_month = dt.datetime.now(UTC).date().replace(day=1)
    return (this_month - dt.timedelta(days=1)).replace(day=1), this_month


def world() -> tuple[Organisation, str, Any]:
    organisation = organisation_make()
    usage_event_make(organisation=organisation, data={"cpu_usage_hours": "Float64", "region": "Nullable(String)"})
    actor = system_actor(organisation=organisation)
    cpu = metric_create(
        actor=actor,
        body={
            "name": "CPU hours",
            "slug": "cpu_hours",
            "usage_event": "compute_hours",
            "aggregation": "sum",
            "field": "cpu_usage_hours",
            "group_by": ["region"],
            "granularity": "day",
        },
    )
    calls = metric_create(
        actor=actor,
        body={
            "name": "API calls",
            "slug": "api_calls",
            "usage_event": "compute_hours",
            "aggregation": "count",
            "granularity": "day",
        },
    )
    customer = customer_make(organisation, external_id="cus_1", tax_rate="10", payment_terms_days=15)
    start, _ = last_month()
    contract = contract_make(
        organisation,
        customer,
        [
            pricing_make(organisation, "Platform", {"pricing_type": "flat_fee", "unit_amount": "49"}),
            pricing_make(organisation, "Calls", {"pricing_type": "per_unit", "unit_amount": "1.23"}, calls),
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
                calls,
            ),
            pricing_make(
                organisation,
                "Compute packs",
                {"pricing_type": "package", "package_size": 100, "unit_amount": "9.99"},
                cpu,
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
        ],
        start=start.isoformat(),
        anchor_date=start.isoformat(),
    )
    return organisation, api_key_make(organisation=organisation, scope="full").secret, contract


def push(secret: str, records: list[dict[str, Any]]) -> None:
    response = Client().post(
        "/usage/compute_hours?backfill=true",
        data=json.dumps(records),
        content_type="application/json",
        HTTP_X_API_KEY=secret,
    )
    assert response.status_code == 202, response.content


def record(day: int, hours: float, region: str, key: str) -> dict[str, Any]:
    start, _ = last_month()
    moment = dt.datetime.combine(start, dt.time(10), tzinfo=UTC) + dt.timedelta(days=day - 1)
    return {
        "customer_id": "cus_1",
        "timestamp": moment.isoformat(),
        "idempotency_key": key,
        "data": {"cpu_usage_hours": hours, "region": region},
    }


def amounts(invoice_id: Any) -> dict[str, Decimal]:
    invoice = Invoice.objects.get(id=invoice_id)
    return {line.description.split(": ")[1]: line.amount for line in invoice.lines.all()}


# Twelve records: CPU us 100 + 50, eu 100.5 (250.5 hours), nine more of 0 hours in us; 12 calls.
JANUARY_LIKE = {
    "Platform": Decimal("49.00"),
    "Calls": Decimal("14.76"),  # 12 x 1.23
    "Compute tiered": Decimal("27.04"),  # 5 + 100 x 0.10 + 150.5 x 0.08
    "Calls volume": Decimal("11.50"),  # 12 > 10: all at 0.75 = 9.00, + 2.50
    "Compute packs": Decimal("29.97"),  # ceil(250.5 / 100) = 3 x 9.99
    "Compute by region": Decimal("4.76"),  # 150 x 0.015 + 100.5 x 0.025 = 2.25 + 2.5125 = 4.7625
}
# A late record of 10 eu hours: 260.5 hours (eu 110.5), 13 calls.
WITH_LATE = {
    "Platform": Decimal("49.00"),
    "Calls": Decimal("15.99"),  # 13 x 1.23
    "Compute tiered": Decimal("27.84"),  # 5 + 10 + 160.5 x 0.08 = 27.84
    "Calls volume": Decimal("12.25"),  # 13 x 0.75 + 2.50
    "Compute packs": Decimal("29.97"),  # ceil(2.605) = 3 packs
    "Compute by region": Decimal("5.01"),  # 2.25 + 110.5 x 0.025 = 5.0125
}


def test_beat_recomputes_a_draft_that_no_refresh_reached() -> None:
    _, secret, contract = world()
    push(secret, [record(3, 100, "us", "a"), record(9, 50, "us", "b"), record(20, 100.5, "eu", "c")])
    push(secret, [record(21, 0, "us", f"zero-{n}") for n in range(9)])

    with celery_worker_with_beat(
        INVOICES_GENERATE_SECONDS="1", METRICS_SWEEP_SECONDS="1", DRAFTS_RECONCILE_SECONDS="2"
    ):
        wait_for(lambda: Invoice.objects.filter(contract=contract, kind="period").exists())
        draft = Invoice.objects.get(contract=contract, kind="period")
        wait_for(lambda: amounts(draft.id) == JANUARY_LIKE)
        time.sleep(4)  # past beat's first round (it sends every entry when it starts)
        # A line left behind its contract as a lost refresh leaves it (a queryset update: no refresh is
        # queued): beat's drafts sweep compares the draft with a fresh computation and puts it right.
        InvoiceLine.objects.filter(invoice=draft, description__endswith=": Platform").update(amount=Decimal("1.00"))
        assert amounts(draft.id)["Platform"] == Decimal("1.00")
        seconds = wait_for(lambda: amounts(draft.id) == JANUARY_LIKE, seconds=20)
        print(f"the drafts sweep put the draft right after {seconds:.1f} s")


def test_a_month_of_every_pricing_model_through_the_worker(settings: Any) -> None:
    organisation, secret, contract = world()
    push(
        secret,
        [record(3, 100, "us", "a"), record(9, 50, "us", "b"), record(20, 100.5, "eu", "c")]
        + [record(21, 0, "us", f"zero-{n}") for n in range(9)],
    )

    with celery_worker_with_beat(INVOICES_GENERATE_SECONDS="1", METRICS_SWEEP_SECONDS="1"):
        # Beat creates the closed period's draft by itself; its lines follow the worker's metric values.
        wait_for(lambda: Invoice.objects.filter(contract=contract, kind="period").exists())
        draft = Invoice.objects.get(contract=contract, kind="period")
        start, end = last_month()
        assert (draft.status, draft.period_start, draft.period_end) == ("draft", start, end)
        wait_for(lambda: amounts(draft.id) == JANUARY_LIKE)
        draft.refresh_from_db()
        assert (draft.subtotal, draft.tax, draft.total) == (
            Decimal("137.03"),
            Decimal("13.70"),  # 10% of 137.03 = 13.703
            Decimal("150.73"),
        )

        # A late record reaches the draft within seconds; voiding it takes it out again.
        push(secret, [record(25, 10, "eu", "late")])
        late_seconds = wait_for(lambda: amounts(draft.id) == WITH_LATE, seconds=15)
        late = UsageRecord.objects.get(idempotency_key="late")
        record_void(
            actor=system_actor(organisation=organisation), api_slug="compute_hours", record_id=late.id, reason="dup"
        )
        void_seconds = wait_for(lambda: amounts(draft.id) == JANUARY_LIKE, seconds=15)
        print(f"late record in the draft after {late_seconds:.1f} s, its void after {void_seconds:.1f} s")

        # Approval freezes the draft: a later record changes the metric, never the approved invoice.
        api = APIClient()
        api.credentials(HTTP_X_API_KEY=secret)
        approved = api.post(f"/api/v1/invoices/{draft.id}/approve/").json()
        assert (approved["status"], approved["number"], approved["total"]) == ("approved", "INV-000001", "150.73")
        push(secret, [record(26, 40, "us", "after-approval")])
        wait_for(
            lambda: (
                sum(
                    Decimal(v)
                    for v in MetricValue.objects.filter(metric__slug="cpu_hours", customer_id="cus_1").values_list(
                        "computed_value", flat=True
                    )
                    if v is not None
                )
                == Decimal("290.5")
            )
        )
        time.sleep(2)  # give a (wrong) refresh of the approved invoice the time to happen
        assert amounts(draft.id) == JANUARY_LIKE
        assert api.get(f"/api/v1/invoices/{draft.id}/").json()["total"] == "150.73"
        # It lands as adjustment lines on the contract's next invoice (the current period: its upcoming
        # invoice, until that period closes and its draft carries them): 40 US hours and one call more.
        upcoming = api.get(f"/api/v1/contracts/{contract.id}/upcoming-invoice/").json()
        adjusted = {
            line["description"].split(": ")[-1]: (line["amount"], line["adjustment_of_start"])
            for line in upcoming["line_items"]
            if line["adjustment_of_start"]
        }
        assert adjusted == {
            "Calls": ("1.23", start.isoformat()),  # 13 - 12 calls at 1.23
            "Calls volume": ("0.75", start.isoformat()),  # 12.25 - 11.50
            "Compute tiered": ("3.20", start.isoformat()),  # 5 + 10 + 190.5 x 0.08 = 30.24, was 27.04
            "Compute by region": ("0.60", start.isoformat()),  # 190 x 0.015 + 2.5125 = 5.3625 -> 5.36, was 4.76
        }

    # A credit note, then a partial and a full payment (SPEC §9: amount due = total - credited - paid).
    note = api.post(
        f"/api/v1/invoices/{draft.id}/credit-notes/",
        {"credit_note_amount": "0.73", "reason": "rounding"},
        format="json",
    )
    assert note.status_code == 201, note.content
    assert api.get(f"/api/v1/invoices/{draft.id}/").json()["amount_due"] == "150.00"
    for paid, status, due in (("100", "partially_paid", "50.00"), ("50", "paid", "0.00")):
        response = api.post(
            "/api/v1/payments/",
            {
                "amount": paid,
                "currency_code": "USD",
                "payment_method": "wire",
                "payment_parts": [{"invoice_id": str(draft.id), "amount": paid}],
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        body = api.get(f"/api/v1/invoices/{draft.id}/").json()
        assert (body["status"], body["amount_due"]) == (status, due)
    # The period's invoice was made once, by beat; a run now finds nothing left to make.
    assert invoices_generate_due(now=dt.datetime.now(UTC)) == 0
    assert Invoice.objects.filter(contract=contract, kind="period").count() == 1


def test_the_generation_task_killed_mid_run_completes_on_the_next_run_without_a_gap_or_a_double() -> None:
    organisation = organisation_make()
    flat = pricing_make(organisation, "Platform", {"pricing_type": "flat_fee", "unit_amount": "10"})
    this_month = dt.datetime.now(UTC).date().replace(day=1)
    periods = (this_month.year - 2025) * 12 + this_month.month - 1  # monthly periods closed since 2025-01-01
    # More drafts than five steps make: when the first step's commit is seen, five more remain to run. The
    # solo worker runs them one after another, a few tenths of a second each, and the kill lands within a
    # poll (0.2 s) of that commit. With two steps' worth, the rest sometimes finished before the kill.
    contracts = [
        contract_make(organisation, customer_make(organisation, external_id=f"cus_{n}"), [flat], start="2025-01-01")
        for n in range(5 * GENERATE_BATCH // periods + 1)
    ]
    expected = len(contracts) * periods

    with celery_worker() as worker:
        invoices_generate_due_task.delay()
        wait_for(lambda: Invoice.objects.count() >= 30)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    made_before_the_kill = Invoice.objects.count()
    assert 30 <= made_before_the_kill < expected

    with celery_worker():
        invoices_generate_due_task.delay()  # beat's next run
        wait_for(lambda: Invoice.objects.count() >= expected, seconds=120)
        time.sleep(1)  # any run still going would add a double now
    rows = list(Invoice.objects.values_list("contract_id", "period_start"))
    assert len(rows) == len(set(rows)) == expected
    for contract in contracts:
        starts = sorted(start for contract_id, start in rows if contract_id == contract.id)
        assert starts[0] == dt.date(2025, 1, 1)
        assert len(starts) == periods
    assert invoices_generate_due(now=dt.datetime.now(UTC)) == 0
