"""Enqueueing metric refreshes from the web processes, debounced and never in the way of ingestion."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)
_last_enqueued: dict[int, float] = {}
_lock = threading.Lock()


def metrics_refresh_soon(*, usage_event_id: int) -> None:
    """Enqueue a refresh after commit, at most once per debounce interval per usage event and process.

    A refresh covers every dirty hour of the usage event, so skipped enqueues lose nothing; if the
    broker is unreachable the dirty rows stay and the beat sweep picks them up.
    """
    now = time.monotonic()
    debounce = settings.METRICS_REFRESH_DEBOUNCE_SECONDS
    if now - _last_enqueued.get(usage_event_id, -1e9) < debounce:
        return  # the common case, answered without the lock; the check below decides races
    with _lock:
        if now - _last_enqueued.get(usage_event_id, -1e9) < debounce:
            return
        _last_enqueued[usage_event_id] = now

    def enqueue() -> None:
        from metrics.tasks import metrics_refresh_task

        try:
            # The countdown gathers the next moments' records into the same refresh.
            metrics_refresh_task.apply_async((usage_event_id,), countdown=settings.METRICS_REFRESH_DEBOUNCE_SECONDS)
        except Exception:  # the sweep covers what could not be enqueued
            logger.warning("could not enqueue a metrics refresh for usage event %s", usage_event_id, exc_info=True)

    transaction.on_commit(enqueue)
