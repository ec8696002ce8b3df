"""The HTTP limit: a WSGI app that reads the body and answers 202 with a small JSON, nothing else."""

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"accepted":1,"duplicates":0,"rejected":0,"results":[{"index":0,"status":"accepted","id":1}]}'


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
