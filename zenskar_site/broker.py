"""The Celery broker transport in production mode: kombu's Redis transport, made to survive a Redis outage.

kombu 5.7.0 with celery 5.7.0 and redis-py 8.1.0 (the newest releases; no release fixes it) kills the
worker when Redis goes away while a task is unacknowledged (every task here acks late):

1. The consumer's event loop reads from the dead socket and raises ``ConnectionError``.
2. ``Consumer.on_connection_error_after_connected`` calls ``connection.collect()``, which closes the
   channel; that close first reads the pending BRPOP, raises again, and leaves the channel open; then
   ``collect`` clears ``transport.client`` (the kombu ``Connection``).
3. It then calls ``connection.close()``; the channel's second close restores the unacknowledged
   messages, which builds a new Redis pool from ``_connparams``, which reads ``transport.client.hostname``:
   ``AttributeError: 'NoneType' object has no attribute 'hostname'``. That is not a connection error, so
   ``ignore_errors`` lets it through and the worker logs ``Unrecoverable error`` and exits (beat too
   when it runs inside the worker with ``-B``).

The upstream reports of this class of crash (celery/celery#7705, #9250, kombu#970) are about the same
path: cleanup code running after the connection object was cleared.

The fix here: a channel remembers the connection parameters it was opened with, so the cleanup after
a lost connection can still reach Redis: the unacknowledged messages are put back on their queue when
Redis is already back, and when it is still down the attempt fails with an ordinary ``ConnectionError``,
which every caller on that path ignores (the messages then stay in Redis' unacked set, which kombu
restores after ``visibility_timeout``; the periodic sweep does not wait for that). A task that finishes
after the reconnection acknowledges through the same parameters instead of failing the same way.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _kept_connparams: dict[bool, dict[str, Any]] | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # the Connection was closed under us (see the module docstring)
            kept = (self._kept_connparams or {}).get(asynchronous)
            if kept is None:
                raise redis.exceptions.ConnectionError("the broker connection is closed")
            return dict(kept)
        # kombu's type stubs leave out this private method, which is what is being fixed.
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        if self._kept_connparams is None:
            self._kept_connparams = {}
        self._kept_connparams[asynchronous] = dict(params)
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel
