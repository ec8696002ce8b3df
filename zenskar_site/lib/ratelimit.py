"""Per-organisation request rate limits: a fixed one-second window, one counter per scope.

Production mode counts in Redis so every web process shares one budget; embedded mode (where the
limits are off by default) counts in process memory.

When Redis cannot be reached the limit still fails open (ingestion must not stop because the
limiter's store is down), but not blindly: each process counts in its own memory for the window,
so one process still enforces the limit (the whole deployment then allows up to one budget per
process), tries Redis again after REDIS_RETRY_SECONDS, and logs one warning per
WARNING_INTERVAL_SECONDS instead of one per request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# After a failure, requests count in process memory for this long before Redis is tried again: a
# store that is down (or a host that drops packets) costs one connect timeout per process per
# interval, not one per request.
REDIS_RETRY_SECONDS = 5.0
# At most one "Redis unreachable" warning per process in this interval.
WARNING_INTERVAL_SECONDS = 60.0


@lru_cache(maxsize=4)
def _redis(url: str) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One immediate retry covers a pooled connection that went stale (Redis restarted); redis-py's
    # default of ten retries with back-off would hold every request while Redis is down.
    return redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), retries=1)
    )


class _Fallback:
    """This process's counters and what it knows about Redis; every field is guarded by `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # "scope:organisation" -> (window, count): one entry per pair, overwritten when its window ends.
        self.counts: dict[str, tuple[int, int]] = {}
        self.redis_retry_at = 0.0  # time.monotonic() before which Redis is not tried
        self.redis_down = False
        self.warned_at = -math.inf


_fallback = _Fallback()


def rate_limit_reset() -> None:
    """Forget this process's counts and Redis's last failure (as a fresh process starts)."""
    global _fallback
    _fallback = _Fallback()


def rate_limit_retry_after(
    *, organisation_id: object, now: float, limit: int | None = None, scope: str = "ingest"
) -> int | None:
    """Count one request; the seconds to wait when the organisation is over its limit, else None.

    `scope` names the budget (`ingest`, `api`): each scope counts separately. `limit` defaults to
    INGEST_RATE_LIMIT; 0 or less turns the limit off.
    """
    limit = settings.INGEST_RATE_LIMIT if limit is None else limit
    if limit <= 0:
        return None
    window = int(now)
    count = _redis_count(f"ratelimit:{scope}:{organisation_id}:{window}") if settings.REDIS_URL else None
    if count is None:
        count = _local_count(f"{scope}:{organisation_id}", window)
    if count > limit:
        return 1
    return None


def _local_count(name: str, window: int) -> int:
    state = _fallback
    with state.lock:
        if len(state.counts) > 100_000:
            state.counts.clear()
        last_window, count = state.counts.get(name, (window, 0))
        count = count + 1 if last_window == window else 1
        state.counts[name] = (window, count)
        return count


def _redis_count(key: str) -> int | None:
    """The request's count in Redis, or None when Redis is down (the caller then counts locally)."""
    state = _fallback
    clock = time.monotonic()
    if clock < state.redis_retry_at:
        return None
    try:
        pipe = _redis(settings.REDIS_URL).pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 2)
        count = int(pipe.execute()[0])
    except Exception as exc:  # any failure of the store: fail open, counted in this process
        with state.lock:
            state.redis_retry_at = clock + REDIS_RETRY_SECONDS
            state.redis_down = True
            warn = clock - state.warned_at >= WARNING_INTERVAL_SECONDS
            if warn:
                state.warned_at = clock
        if warn:
            logger.warning(
                "Rate limiting cannot reach Redis (%s: %s); until it can, each process counts on its own, "
                "so the deployment allows up to one limit per process. Ingestion goes on.",
                type(exc).__name__,
                exc,
            )
        return None
    if state.redis_down:
        with state.lock:
            recovered, state.redis_down = state.redis_down, False
        if recovered:
            logger.warning("Rate limiting reaches Redis again; the limits are shared by every process.")
    return count
