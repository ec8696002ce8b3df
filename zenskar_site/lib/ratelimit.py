"""Per-organisation request rate limit: a fixed one-second window.

Production mode counts in Redis so every web process shares one budget; embedded mode (where the
limit is off by default) counts in process memory.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from django.conf import settings


@lru_cache(maxsize=1)
def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


_local_counts: dict[str, int] = {}
_local_lock = threading.Lock()


def rate_limit_retry_after(*, organisation_id: object, now: float, limit: int | None = None) -> int | None:
    """Count one request; the seconds to wait when the organisation is over its limit, else None."""
    limit = settings.INGEST_RATE_LIMIT if limit is None else limit
    if limit <= 0:
        return None
    window = int(now)
    key = f"ratelimit:{organisation_id}:{window}"
    if settings.REDIS_URL:
        try:
            pipe = _redis().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 2)
            count = int(pipe.execute()[0])
        except Exception:  # the broker being down must not stop ingestion; fail open
            return None
    else:
        with _local_lock:
            if len(_local_counts) > 10_000:
                _local_counts.clear()
            count = _local_counts[key] = _local_counts.get(key, 0) + 1
    if count > limit:
        return 1
    return None
