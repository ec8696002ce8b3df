"""Enqueue a Celery task once the current transaction commits, never failing the caller.

A task enqueued before commit could run against rows it cannot see yet, and a request whose
broker is down must still succeed: the rows it wrote stay, and a beat sweep (or the user) picks the
work up. So every enqueue goes through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(
    task: Any,
    args: Sequence[Any],
    *,
    countdown: float | None = None,
    on_failure: Callable[[Exception], None] | None = None,
    when: Callable[[], bool] | None = None,
) -> None:
    """Send `task(*args)` after commit (at once outside a transaction); if the broker is down, log and `on_failure`.

    With `when`, it is asked after commit, and the task is sent only if it answers True (a claim that
    another process may hold, say)."""

    def send() -> None:
        if when is not None and not when():
            return
        try:
            task.apply_async(tuple(args), countdown=countdown)
        except Exception as exc:  # the broker is unreachable: what was written stays for a sweep
            logger.warning("could not enqueue %s%r", getattr(task, "name", task), tuple(args), exc_info=True)
            if on_failure is not None:
                on_failure(exc)

    transaction.on_commit(send)
