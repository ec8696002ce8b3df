"""Claims shared by every process of a deployment: of the processes that want to enqueue the same
piece of work, the one that sets the claim first does, and the task gives it back when it starts.

Production mode keeps them in Redis (SET NX with an expiry, so a claim whose task was lost lapses by
itself); embedded mode, with no Redis and one web process, has none: every caller may go on. When
Redis cannot be reached a claim is granted (at worst the work is enqueued twice, as without claims),
and Redis is tried again after RETRY_SECONDS, so an outage costs one connect timeout per process per
interval, not one per call.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)
RETRY_SECONDS = 5.0
_down_until = [0.0]


@lru_cache(maxsize=4)
def _redis(url: str) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), retries=1)
    )


def _key(name: str) -> str:
    # The database's name keeps apart deployments (and test runs) that share a Redis database.
    return f"claim:{settings.DATABASES['default']['NAME']}:{name}"


def _client() -> Any | None:
    if not settings.REDIS_URL or time.monotonic() < _down_until[0]:
        return None
    return _redis(settings.REDIS_URL)


# Deletes the claim only if it still holds this holder's token: a task that did not take it (one sent
# before a lapse, say) must not release its successor's.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def claim_take(name: str, *, seconds: float, token: str) -> bool:
    """Take the claim `name` for `seconds` as `token`'s holder: True when this caller took it (or there
    is no shared store to ask), False while another holds it."""
    client = _client()
    if client is None:
        return True
    try:
        return bool(client.set(_key(name), token, nx=True, px=max(1, int(seconds * 1000))))
    except Exception:
        _down_until[0] = time.monotonic() + RETRY_SECONDS
        logger.warning("Could not reach Redis for the claim %s; going on without it", name, exc_info=True)
        return True


def claim_release(name: str, *, token: str) -> None:
    """Give the claim `name` back if `token` holds it (its work started, or could not be enqueued);
    never raises."""
    client = _client()
    if client is None:
        return
    try:
        client.eval(_RELEASE, 1, _key(name), token)
    except Exception:
        _down_until[0] = time.monotonic() + RETRY_SECONDS
        logger.warning("Could not release the claim %s; it lapses by itself", name, exc_info=True)
