"""The generator in bounded steps (SPEC §9): every due period's draft made once whatever the step sizes,
equal to a fresh computation and audited; a step's queries do not grow with its contracts. Runs on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.invoicing.compute import invoice_compute, invoice_line_rows
from billing.invoicing.models import Invoice, InvoiceLine
from billing.invoicing.services import invoice_snapshot, invoices_generate_due_step, invoices_reconcile
from billing.models import Contract, Pricing
from metrics.models import BillableMetric
from tests.billing.conftest import TIERED, customer_make, metric_make
from tests.billing.invoice_helpers import contract_make, day, pricing_make, value_make
from zenskar_site.accounts.models import AuditEntry, Organisation

MARCH_5 = dt.datetime(2024, 3, 5, 9, tzinfo=dt.UTC)


Catalogue = tuple[BillableMetric, list[Pricing]]


def catalogue_make(organisation: Organisation) -> Catalogue:
    """A flat fee, per-unit and tiered prices on `cpu_hours`."""
    cpu = metric_make(organisation, slug="cpu_hours")
    return cpu, [
        pricing_make(organisation, "Platform", {"pricing_type": "flat_fee", "unit_amount": "49"}),
        pricing_make(organisation, "Per unit", {"pricing_type": "per_unit", "unit_amount": "0.015"}, cpu),
        pricing_make(organisation, "Tiered", TIERED, cpu),
    ]


def contracts_make(organisation: Organisation, catalogue: Catalogue, numbers: range) -> list[Contract]:
    """A contract since January 1st for each number, with usage in January and February."""
    cpu, pricings = catalogue
    contracts = []
    for i in numbers:
        customer = customer_make(organisation, external_id=f"cus_{i}", tax_rate="8.25")
        contracts.append(contract_make(organisation, customer, pricings))
        value_make(cpu, f"cus_{i}", day(2024, 1, 1 + i), f"{10 * i + 0.5}")
        value_make(cpu, str(customer.id), day(2024, 2, 1 + i), f"{150 + i}")  # by the customer's id: theirs too
    return contracts


@pytest.mark.django_db
def test_steps_of_any_size_make_every_due_period_once_as_a_fresh_computation_and_audited(
    organisation: Organisation,
) -> None:
    contracts = contracts_make(organisation, catalogue_make(organisation), range(4))  # Jan. and Feb.: 8 drafts
    made, steps, resume = 0, 0, None
    while True:
        # 3 drafts per step from 2 contracts at most: a contract's periods are split across steps.
        step_made, resume = invoices_generate_due_step(now=MARCH_5, from_contract=resume, limit=3, scan=2)
        made, steps = made + step_made, steps + 1
        assert step_made <= 3
        if resume is None:
            break

    assert (made, steps) == (8, 3)  # A, B(Jan) | B(Feb), C | D
    periods = sorted(Invoice.objects.values_list("contract_id", "period_start"))
    assert periods == sorted((c.id, start) for c in contracts for start in (dt.date(2024, 1, 1), dt.date(2024, 2, 1)))
    assert invoices_reconcile() == ([], [])
    for invoice in Invoice.objects.select_related("contract__customer"):
        fresh = invoice_compute(
            contract=invoice.contract, period_start=invoice.period_start, period_end=invoice.period_end
        )
        assert (invoice.total, invoice.amount_due, invoice.tax) == (fresh.total, fresh.total, fresh.tax)
        assert [line.amount for line in invoice.lines.all()] == [line.amount for line in fresh.lines]
        audit = AuditEntry.objects.get(object_id=str(invoice.id), action="invoice.generate")
        assert audit.after is not None
        assert (audit.before, Decimal(audit.after["total"]), audit.actor) == (None, invoice.total, "system")
    # Running again from the start makes nothing.
    assert invoices_generate_due_step(now=MARCH_5) == (0, None)


@pytest.mark.django_db
def test_a_step_reads_and_writes_in_as_many_queries_for_five_contracts_as_for_one(
    organisation: Organisation,
) -> None:
    catalogue = catalogue_make(organisation)
    contracts_make(organisation, catalogue, range(1))

    def step_queries() -> int:
        InvoiceLine.objects.all().delete()
        Invoice.objects.all().delete()
        with CaptureQueriesContext(connection) as queries:
            made, _ = invoices_generate_due_step(now=MARCH_5)
        assert made == 2 * Contract.objects.count()
        return len(queries.captured_queries)

    one = step_queries()
    contracts_make(organisation, catalogue, range(1, 5))
    five = step_queries()

    # Contracts, their pauses and organisations, links, phases, pricings, periods made, approved invoices,
    # quantities (one per period: 2), the invoices' insert (and on SQLite their check), lines, audit
    # entries; and the transaction's own statements.
    assert one == five
    assert five <= 16


@pytest.mark.django_db
def test_a_contract_that_cannot_be_computed_holds_back_no_other(
    organisation: Organisation, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken, *others = contracts_make(organisation, catalogue_make(organisation), range(3))

    def compute(**kwargs: object) -> object:
        if kwargs["contract"] == broken:
            raise ValueError("a pricing its metric no longer fits")
        return invoice_compute(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("billing.invoicing.services.invoice_compute", compute)
    made, resume = invoices_generate_due_step(now=MARCH_5)

    assert (made, resume) == (4, None)  # January and February of the two others
    assert set(Invoice.objects.values_list("contract_id", flat=True)) == {contract.id for contract in others}
    monkeypatch.undo()
    assert invoices_generate_due_step(now=MARCH_5) == (2, None)  # the next run makes the broken one's


@pytest.mark.django_db
def test_a_step_stores_each_draft_its_lines_and_audit_entry_as_the_models_would(organisation: Organisation) -> None:
    # On PostgreSQL the step writes arrays of values, not model instances: the rows must be the same.
    contracts_make(organisation, catalogue_make(organisation), range(2))

    assert invoices_generate_due_step(now=MARCH_5) == (4, None)

    line_fields = [f.attname for f in InvoiceLine._meta.concrete_fields if f.attname != "id"]
    for invoice in Invoice.objects.select_related("contract__customer"):
        fresh = invoice_compute(
            contract=invoice.contract, period_start=invoice.period_start, period_end=invoice.period_end
        )
        stored = [[getattr(line, name) for name in line_fields] for line in invoice.lines.all()]
        assert stored == [[getattr(line, name) for name in line_fields] for line in invoice_line_rows(invoice, fresh)]
        assert (invoice.kind, invoice.status, invoice.number, invoice.flagged, invoice.void_reason) == (
            "period",
            "draft",
            None,
            [],
            "",
        )
        assert (invoice.tax_rate, invoice.amount_credited, invoice.amount_paid) == (Decimal("8.25"), 0, 0)
        assert invoice.computed_at is not None
        assert invoice.updated_at >= invoice.created_at
        entry = AuditEntry.objects.get(object_id=str(invoice.id))
        assert (entry.organisation_id, entry.actor, entry.actor_user_id, entry.actor_api_key_id) == (
            organisation.id,
            "system",
            None,
            None,
        )
        assert (entry.action, entry.object_type, entry.before, entry.reason) == (
            "invoice.generate",
            "invoice",
            None,
            "",
        )
        assert entry.after is not None
        assert entry.after.keys() == invoice_snapshot(invoice).keys()
        for name, value in invoice_snapshot(invoice).items():  # amounts as written: 65.25 stored as 65.2500
            assert entry.after[name] == value or Decimal(entry.after[name]) == Decimal(value)
    # `before` is SQL NULL (what Django stores for None), not JSON null.
    assert AuditEntry.objects.filter(action="invoice.generate", before__isnull=True).count() == 4


@pytest.mark.django_db
def test_a_step_reads_quantities_a_few_customers_per_query_with_each_customers_keys_together(
    organisation: Organisation, monkeypatch: pytest.MonkeyPatch
) -> None:
    contracts = contracts_make(organisation, catalogue_make(organisation), range(5))
    monkeypatch.setattr("billing.invoicing.compute.QUANTITIES_CHUNK", 2)

    with CaptureQueriesContext(connection) as queries:
        assert invoices_generate_due_step(now=MARCH_5) == (10, None)

    reads = [query["sql"] for query in queries.captured_queries if "metrics_metricvalue" in query["sql"]]
    assert len(reads) == 6  # January and February, 5 customers 2 at a time
    for contract in contracts:  # a customer is named by its external id or its id: both in the same query
        named = [(f"'{contract.customer.external_id}'" in sql, f"'{contract.customer_id}'" in sql) for sql in reads]
        assert sorted(named) == [(False, False)] * 4 + [(True, True)] * 2  # once a month
    assert invoices_reconcile() == ([], [])
