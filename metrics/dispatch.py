"""Enqueueing metric refreshes from the web processes, debounced and never in the way of ingestion."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from django.conf import settings

from zenskar_site.lib.claims import claim_release, claim_take
from zenskar_site.lib.enqueue import enqueue_on_commit

_last_enqueued: dict[int, float] = {}
_lock = threading.Lock()
# A queued refresh's claim lapses after this long if its task is lost (the sweep covers the dirty
# hours meanwhile); a backlog longer than this lets one more refresh of the usage event be queued.
REFRESH_CLAIM_SECONDS = 10.0


def _refresh_claim(usage_event_id: int) -> str:
    return f"metrics-refresh:{usage_event_id}"


def refresh_claim_release(*, usage_event_id: int, token: str) -> None:
    """The refresh task that holds the claim as `token` has started: records committed from now on
    need the next one (it reads the dirty hours after this)."""
    claim_release(_refresh_claim(usage_event_id), token=token)


def metrics_refresh_soon(*, usage_event_id: int) -> None:
    """Enqueue a refresh after commit, at most once per debounce interval per usage event and process,
    and only if no refresh of the usage event is queued by any process (a claim the task releases when
    it starts).

    A refresh covers every dirty hour of the usage event, so skipped enqueues lose nothing; if the
    broker is unreachable the dirty rows stay and the beat sweep picks them up. Without the shared
    claim every web process queued its own refreshes of a busy usage event, each a few times a second,
    faster than the workers ran them: another organisation's refresh then waited behind hundreds of
    redundant ones.
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
    claim, token = _refresh_claim(usage_event_id), secrets.token_hex(8)
    enqueue_on_commit(
        metrics_refresh_task,
        (usage_event_id, token),
        countdown=debounce,
        when=lambda: claim_take(claim, seconds=REFRESH_CLAIM_SECONDS, token=token),
        on_failure=lambda exc: claim_release(claim, token=token),
    )


def records_changed_receiver(sender: Any, usage_event_id: int, **kwargs: Any) -> None:
    """usage.dirty.records_changed: the records of a usage event changed; refresh its metrics soon."""
    metrics_refresh_soon(usage_event_id=usage_event_id)
