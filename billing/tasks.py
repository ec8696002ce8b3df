"""Celery adapters for billing: each takes IDs or primitives, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.invoicing.services import (
    GENERATE_BATCH,
    contract_drafts_refresh,
    invoice_drafts_refresh,
    invoices_generate_due,
)


@shared_task(ignore_result=True)
def invoices_generate_due_task() -> int:
    """Beat: drafts for every closed billing period; re-enqueues itself while a full batch was made."""
    made = invoices_generate_due(now=timezone.now(), limit=GENERATE_BATCH)
    if made >= GENERATE_BATCH:
        invoices_generate_due_task.delay()
    return made


@shared_task(ignore_result=True, acks_late=True)
def invoice_drafts_refresh_task(metric_id: int, customer_ids: list[str]) -> int:
    return invoice_drafts_refresh(metric_id=metric_id, customer_ids=customer_ids)


@shared_task(ignore_result=True, acks_late=True)
def contract_drafts_refresh_task(contract_id: str) -> int:
    return contract_drafts_refresh(contract_id=contract_id)
