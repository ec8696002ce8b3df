"""Celery adapters for billing: each takes IDs or primitives, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.invoicing.services import invoice_drafts_refresh, invoices_generate_due_step


@shared_task(ignore_result=True)
def invoices_generate_due_task(from_contract: str | None = None) -> int:
    """Beat (no argument): drafts for every closed billing period, one bounded step per task; each step
    enqueues the next from where it stopped, until every contract has been looked at."""
    made, resume = invoices_generate_due_step(now=timezone.now(), from_contract=from_contract)
    if resume is not None:
        invoices_generate_due_task.delay(resume)
    return made


@shared_task(ignore_result=True, acks_late=True)
def invoice_drafts_refresh_task(metric_id: int, customer_ids: list[str]) -> int:
    return invoice_drafts_refresh(metric_id=metric_id, customer_ids=customer_ids)
