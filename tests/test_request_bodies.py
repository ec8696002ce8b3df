"""Request bodies that arrive short or too slowly are a 4xx at once under real gunicorn, and the
worker is free for the next request (issue 10, finding 4 and item 2)."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.processes import gunicorn_server, http_post
from usage.models import UsageRecord

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _record(key: str) -> bytes:
    return json.dumps(
        {
            "customer_id": "cus_1",
            "timestamp": timezone.now().replace(microsecond=0).isoformat(),
            "data": {"cpu_usage_hours": 1.5},
            "idempotency_key": key,
        }
    ).encode()


def _open(url: str, path: str, secret: str, content_length: int) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=15)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of the one response on `sock` (the server closes the connection)."""
    raw = b""
    while True:
        chunk = sock.recv(65536)  # raises TimeoutError if the worker is held
        if not chunk:
            break
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


@pytest.fixture
def secret() -> str:
    organisation = organisation_make(name="Bodies")
    usage_event_make(organisation=organisation)
    return api_key_make(organisation=organisation).secret


@pytest.mark.parametrize("path", ["/usage/compute_hours", "/api/v1/metrics/"])
def test_a_body_shorter_than_its_content_length_is_a_408_within_seconds_and_the_worker_serves_the_next(
    secret: str, path: str
) -> None:
    # Given one sync worker (no other to take the next request)
    with gunicorn_server(workers=1, threads=1) as url:
        # When a client announces 1000 bytes, sends 12 and waits
        began = time.monotonic()
        with _open(url, path, secret, 1000) as sock:
            sock.sendall(b'{"customer_')
            status, headers, body = _response(sock)
        elapsed = time.monotonic() - began

        # Then it gets a 408 naming what arrived, within the grace period and not the worker timeout
        assert status == 408
        assert headers["connection"] == "close"
        assert body["detail"].startswith("The request body did not arrive in time: 11 of 1000 bytes in 2.1 s")
        assert elapsed < 6, elapsed

        # and the same worker answers the next request at once
        began = time.monotonic()
        status, _ = http_post(
            f"{url}/usage/compute_hours",
            _record("next"),
            {"x-api-key": secret, "Content-Type": "application/json"},
            timeout=5,
        )
        assert status == 202
        assert time.monotonic() - began < 3
    assert list(UsageRecord.objects.values_list("idempotency_key", flat=True)) == ["next"]


def test_a_body_trickling_under_the_floor_rate_is_a_408_by_its_deadline(secret: str) -> None:
    # Given a floor of 1000 bytes per second: 2000 bytes may take 2 s of grace plus 2 s
    with gunicorn_server(workers=1, threads=1, REQUEST_BODY_MIN_BYTES_PER_SECOND="1000") as url:
        body = b"[" + b" " * 1998 + b"]"
        stop = threading.Event()
        began = time.monotonic()
        with _open(url, "/usage/compute_hours", secret, len(body)) as sock:

            def trickle() -> None:  # one byte every 0.2 s: ten minutes for the whole body
                for byte in body:
                    if stop.wait(0.2):
                        return
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        return

            sender = threading.Thread(target=trickle)
            sender.start()
            try:
                status, _, answer = _response(sock)
            finally:
                stop.set()
                sender.join()
        elapsed = time.monotonic() - began

    assert status == 408
    assert answer["detail"].endswith("in 4.0 s (a body must arrive at 1000 bytes per second or faster).")
    assert 3.5 < elapsed < 8, elapsed
    assert not UsageRecord.objects.exists()


def test_a_body_the_client_cuts_short_is_a_400_naming_the_lengths(secret: str) -> None:
    with gunicorn_server(workers=1, threads=1) as url, _open(url, "/usage/compute_hours", secret, 500) as sock:
        sock.sendall(b"[1, 2")
        sock.shutdown(socket.SHUT_WR)  # the client has nothing more to send
        status, _, body = _response(sock)

    assert status == 400
    assert body == {"detail": "The request body ended after 5 of the 500 bytes its Content-Length gives."}


def test_bodies_that_arrive_whole_reach_both_routes(secret: str) -> None:
    with gunicorn_server(workers=1, threads=1) as url:
        headers = {"x-api-key": secret, "Content-Type": "application/json"}
        ingested = http_post(f"{url}/usage/compute_hours", _record("whole"), headers)
        metric = json.dumps({"name": "CPU", "slug": "cpu", "usage_event": "compute_hours", "aggregation": "count"})
        created = http_post(f"{url}/api/v1/metrics/", metric.encode(), headers)

    assert ingested[0] == 202, ingested
    assert created[0] == 201, created
