"""The signal metrics sends when stored metric values changed, for the layers above (billing's live drafts).

Metrics owns it so that it never imports billing: `billing/apps.py` connects the receiver. It is sent
after the transaction that changed the values commits (never for a rolled-back change), with
`metric_id` and `customer_ids` (the customers whose values of that metric changed).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

metric_values_changed = Signal()


def metric_values_changed_announce(*, metric_id: int, customer_ids: Iterable[str]) -> None:
    """Send `metric_values_changed` once the current transaction commits (at once outside one)."""
    customers = sorted(set(customer_ids))
    if not customers:
        return
    transaction.on_commit(
        lambda: metric_values_changed.send(sender=metric_values_changed, metric_id=metric_id, customer_ids=customers)
    )
