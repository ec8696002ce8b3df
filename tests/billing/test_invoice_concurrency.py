"""SPEC §9: concurrent approvals never share or skip a number (PostgreSQL, real threads and connections)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from billing.invoicing.models import Invoice
from billing.invoicing.services import invoice_approve, invoices_generate_due
from tests.billing.invoice_helpers import all_models_contract
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

THREADS = 8


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_approvals_get_distinct_gap_free_numbers(organisation: Organisation) -> None:
    all_models_contract(organisation, start="2023-05-01")
    invoices_generate_due(now=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))  # May to December: 8 drafts
    ids = list(Invoice.objects.values_list("id", flat=True))
    assert len(ids) == THREADS
    actor = system_actor(organisation=organisation)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def approve(invoice_id: object) -> None:
        try:
            barrier.wait()
            # Each approval twice, concurrently with the others: the second is harmless.
            invoice_approve(actor=actor, invoice_id=invoice_id)
            invoice_approve(actor=actor, invoice_id=invoice_id)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(invoice_id,)) for invoice_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{n:06d}" for n in range(1, THREADS + 1)]
