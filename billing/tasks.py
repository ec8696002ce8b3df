"""Celery adapters for billing: each takes IDs or primitives, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.invoicing.services import (
    contract_drafts_refresh,
    drafts_reconcile,
    invoice_drafts_refresh,
    invoices_generate_due_step,
)


@shared_task(ignore_result=True)
def invoices_generate_due_task(from_contract: str | None = None) -> int:
    """Beat (no argument): drafts for every closed billing period, one bounded step per task, until every
    contract has been looked at. Each step enqueues the next as soon as it knows where that starts, so
    the steps of a month-end run go on side by side on the worker processes."""
    made, _ = invoices_generate_due_step(
        now=timezone.now(), from_contract=from_contract, then=invoices_generate_due_task.delay
    )
    return made


@shared_task(ignore_result=True, acks_late=True)
def invoice_drafts_refresh_task(metric_id: int, customer_ids: list[str]) -> int:
    return invoice_drafts_refresh(metric_id=metric_id, customer_ids=customer_ids)


@shared_task(ignore_result=True, acks_late=True)
def contract_drafts_refresh_task(contract_id: str) -> int:
    return contract_drafts_refresh(contract_id=contract_id)


@shared_task(ignore_result=True)
def drafts_reconcile_task() -> int:
    """Beat: recompute the drafts a refresh missed (see `drafts_reconcile`); how many differed."""
    differing, _ = drafts_reconcile()
    return differing
