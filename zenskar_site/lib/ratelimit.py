"""Per-organisation request rate limits: a fixed one-second window, one counter per scope.

Production mode counts in Redis so every web process shares one budget; embedded mode (where the
limits are off by default) counts in process memory.

A process does not ask Redis for every request: it takes a lease, a share of the window's budget
(INCRBY on the shared counter), and admits requests from it until it is used up. The first lease of
a window is one request (or, in a steady stream, the size the previous second ended with) and each
next one twice the last, up to 1/LEASE_SHARE of the limit, so a quiet organisation costs a round
trip per request while a busy one costs a few per second and per process. A lease never goes past
the limit (the last one gets what remains), so the deployment never admits more than the limit; it
may refuse slightly early, while other processes still hold unused parts of their leases (at most
about one lease per process, 1/LEASE_SHARE of the limit each).

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
from dataclasses import dataclass
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
# The largest lease a process takes at once: this share of the limit.
LEASE_SHARE = 20


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
        # "scope:organisation" -> this process's lease of the window's budget in Redis.
        self.leases: dict[str, _Lease] = {}


@dataclass
class _Lease:
    window: int
    size: int  # the size of the last lease taken (the next is twice as large)
    left: int  # requests this process may still admit in `window`


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
    name = f"{scope}:{organisation_id}"
    admitted = _redis_admit(name, window, limit) if settings.REDIS_URL else None
    if admitted is None:
        admitted = _local_count(name, window) <= limit
    return None if admitted else 1


def _local_count(name: str, window: int) -> int:
    state = _fallback
    with state.lock:
        if len(state.counts) > 100_000:
            state.counts.clear()
        last_window, count = state.counts.get(name, (window, 0))
        count = count + 1 if last_window == window else 1
        state.counts[name] = (window, count)
        return count


def _redis_admit(name: str, window: int, limit: int) -> bool | None:
    """Whether the window's budget in Redis admits one more request (from this process's lease, or a new
    one), or None when Redis is down (the caller then counts locally)."""
    state = _fallback
    with state.lock:
        lease = state.leases.get(name)
        if lease is not None and lease.window == window and lease.left > 0:
            lease.left -= 1
            return True
        size = _lease_size(lease, window=window, limit=limit)
    granted = _redis_lease(f"ratelimit:{name}:{window}", size=size, limit=limit)
    if granted is None:
        return None
    with state.lock:
        if len(state.leases) > 100_000:
            state.leases.clear()
        state.leases[name] = _Lease(window=window, size=size, left=max(granted - 1, 0))
    return granted > 0


def _lease_size(lease: _Lease | None, *, window: int, limit: int) -> int:
    """The next lease: twice the last within a window; a window's first starts where the previous second's
    last lease ended (a steady stream), or at 1 after a quiet second."""
    largest = max(1, limit // LEASE_SHARE)
    if lease is None or not window - 1 <= lease.window <= window:
        return 1
    if lease.window == window - 1:
        return min(lease.size, largest)
    return min(lease.size * 2, largest)


def _redis_lease(key: str, *, size: int, limit: int) -> int | None:
    """Take up to `size` requests of the window's budget in Redis: how many were granted (0: the budget is
    spent), or None when Redis is down."""
    state = _fallback
    clock = time.monotonic()
    if clock < state.redis_retry_at:
        return None
    try:
        pipe = _redis(settings.REDIS_URL).pipeline(transaction=False)
        pipe.incrby(key, size)
        pipe.expire(key, 2)
        total = int(pipe.execute()[0])
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
    # What was left of the budget before this lease, at most `size`.
    return max(0, min(size, limit - (total - size)))
