"""Request bodies read whole, with a deadline, before the application sees the request (gunicorn only).

gunicorn hands the application a socket-backed `wsgi.input` with no time limit: a client that sends
fewer bytes than its Content-Length, or trickles them, holds the worker until gunicorn's worker
timeout kills it (30 s, and the client gets nothing or a 500). `request_body_read` reads the body
before dispatch, under a deadline of REQUEST_BODY_GRACE_SECONDS plus the length at the floor rate
REQUEST_BODY_MIN_BYTES_PER_SECOND, never more than REQUEST_BODY_TIMEOUT_SECONDS (kept under the
worker timeout), and hands the application the bytes in memory. A body that does not arrive in time
is a 408, one cut short by the client a 400, both JSON with `Connection: close`, and the worker is
free at once. A body gunicorn already holds in memory (it came with the headers, as a small
request's does) is taken as it is, with no deadline to keep.

A socket timeout alone cannot bound the total: it applies to each recv(), and gunicorn's reader
loops on recv() until it has what it was asked for, so one byte per almost-timeout keeps it going.
One watchdog thread per process holds the deadlines instead and shuts the read side of a late
request's socket down, which ends the blocked recv() with end-of-file; the response still goes out
on the write side.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

READ_STEP = 1 << 20


@dataclass(frozen=True)
class BodyRefusal:
    status: int
    reason: str
    detail: str


@dataclass(eq=False)
class _Watch:
    sock: Any
    done: bool = False
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Watchdog:
    """Deadlines of the bodies being read in this process; shuts down the sockets of late ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._pid = 0  # the process whose thread runs: a forked worker starts its own

    def watch(self, sock: Any, deadline: float) -> _Watch:
        watch = _Watch(sock)
        with self._cond:
            if self._pid != os.getpid():
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, name="request-body-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._cond.notify()
        return watch

    def _run(self) -> None:
        while True:
            late: list[_Watch] = []
            with self._cond:
                while not late:
                    now = time.monotonic()
                    while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                        _, _, watch = heapq.heappop(self._heap)
                        if not watch.done:
                            late.append(watch)
                    if not late:
                        self._cond.wait(self._heap[0][0] - now if self._heap else None)
            for watch in late:
                with watch.lock:  # not while the reader marks itself done: a finished read keeps its socket
                    if watch.done:
                        continue
                    watch.expired = True
                    with contextlib.suppress(OSError):  # the client is gone already
                        watch.sock.shutdown(socket.SHUT_RD)


_watchdog = _Watchdog()


def _buffered(stream: Any) -> int:
    """How many bytes of the body gunicorn already holds in memory (read with the headers); 0 when the
    stream is not gunicorn's `Body` as this version builds it (its reader's unreader buffers read-ahead)."""
    try:
        return int(stream.reader.unreader.buf.getbuffer().nbytes)
    except (AttributeError, TypeError, ValueError):
        return 0


def request_body_read(environ: dict[str, Any], *, max_bytes: int, refuse_over_limit: bool) -> BodyRefusal | None:
    """Read the body of a gunicorn request into memory under its deadline; None when the application
    may go on (the body is then `environ["wsgi.input"]`), else the refusal to send.

    A body over `max_bytes` is refused (413) unread when `refuse_over_limit`, else left unread for the
    application, which refuses it itself.
    """
    sock = environ.get("gunicorn.socket")
    length_text = environ.get("CONTENT_LENGTH") or ""
    if sock is None or not length_text.isdigit() or int(length_text) == 0:
        return None
    length = int(length_text)
    if length > max_bytes:
        if refuse_over_limit:
            return BodyRefusal(413, "Request Entity Too Large", f"The body is over the limit of {max_bytes} bytes.")
        return None
    stream = environ["wsgi.input"]
    if _buffered(stream) >= length:
        # The body came with the headers (most small requests): reading it cannot block, so no deadline.
        environ["wsgi.input"] = io.BytesIO(stream.read(length))
        return None
    began = time.monotonic()
    allowed = min(
        settings.REQUEST_BODY_TIMEOUT_SECONDS,
        settings.REQUEST_BODY_GRACE_SECONDS + length / settings.REQUEST_BODY_MIN_BYTES_PER_SECOND,
    )
    watch = _watchdog.watch(sock, began + allowed)
    chunks: list[bytes] = []
    received = 0
    try:
        while received < length:
            chunk = stream.read(min(length - received, READ_STEP))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except OSError:
        pass  # reset by the client: what arrived is short, answered below
    finally:
        with watch.lock:
            watch.done = True
    if received < length:
        if watch.expired:
            return BodyRefusal(
                408,
                "Request Timeout",
                f"The request body did not arrive in time: {received} of {length} bytes in {allowed:.1f} s "
                f"(a body must arrive at {settings.REQUEST_BODY_MIN_BYTES_PER_SECOND} bytes per second or faster).",
            )
        return BodyRefusal(
            400,
            "Bad Request",
            f"The request body ended after {received} of the {length} bytes its Content-Length gives.",
        )
    environ["wsgi.input"] = io.BytesIO(b"".join(chunks))
    return None


def body_refusal_send(refusal: BodyRefusal, start_response: Any) -> list[bytes]:
    """The refusal as a JSON response that closes the connection (where the next request would start
    on it is unknown)."""
    import orjson

    content = orjson.dumps({"detail": refusal.detail})
    start_response(
        f"{refusal.status} {refusal.reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(content))), ("Connection", "close")],
    )
    return [content]
