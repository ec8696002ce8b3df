"""Live drafts: when metric values change, the drafts that bill them are recomputed (SPEC §9); when a
contract's terms, phases or pricings change, or which draft carries the adjustments of its approved
invoices, its drafts are recomputed the same way: in a task, after commit."""

from __future__ import annotations

from typing import Any

from zenskar_site.lib.enqueue import enqueue_on_commit


def metric_values_changed_receiver(sender: Any, metric_id: int, customer_ids: list[str], **kwargs: Any) -> None:
    """metrics.signals.metric_values_changed (sent after commit): refresh the affected drafts in a task.

    If the broker is down the drafts stay behind until the next change, beat's drafts sweep
    (`drafts_reconcile`) or `reconcile_invoices --fix`; approval recomputes a draft before freezing it, so
    nothing stale is ever approved.
    """
    from billing.models import PhasePricing
    from billing.tasks import invoice_drafts_refresh_task

    # Most refreshes store values of metrics no contract bills: the task would find no draft, and a
    # task per metric per refresh crowds the queue every organisation's refreshes share.
    if not PhasePricing.objects.filter(pricing__metric_id=metric_id).exists():
        return
    enqueue_on_commit(invoice_drafts_refresh_task, (metric_id, list(customer_ids)))


def contract_drafts_refresh_on_commit(*, contract_id: Any) -> None:
    """Once the current transaction commits, recompute the contract's live invoices in a task (the same
    guarantees as above: a lost enqueue leaves them for the next change, the drafts sweep, or approval)."""
    from billing.tasks import contract_drafts_refresh_task

    enqueue_on_commit(contract_drafts_refresh_task, (str(contract_id),))
