"""Enqueueing metric refreshes from the web processes, debounced and never in the way of ingestion."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings

from zenskar_site.lib.enqueue import enqueue_on_commit

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

    from metrics.tasks import metrics_refresh_task

    # The countdown gathers the next moments' records into the same refresh; the sweep covers what
    # could not be enqueued.
    enqueue_on_commit(metrics_refresh_task, (usage_event_id,), countdown=debounce)


def records_changed_receiver(sender: Any, usage_event_id: int, **kwargs: Any) -> None:
    """usage.dirty.records_changed: the records of a usage event changed; refresh its metrics soon."""
    metrics_refresh_soon(usage_event_id=usage_event_id)
