"""WSGI entry point.

`POST /usage/{api_slug}` takes a lean route around Django's middleware stack: it carries no
session, cookie or CSRF state, authenticates by API key, and is the one path whose cost is paid
per record stream. It still validates the Host header, honours SECURE_SSL_REDIRECT and sends
retires broken or expired database connections as Django's request signals do. Everything else goes to Django.

Under gunicorn, every request's body is read first, under a deadline (zenskar_site/lib/bodies.py): a
body that arrives too slowly or short is a 408 or 400 here, and never holds a worker.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenskar_site.settings")

django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402

from usage.ingestion.wsgi import ingest_application  # noqa: E402  (after Django is set up)
from zenskar_site.lib.bodies import body_refusal_send, request_body_read  # noqa: E402
from zenskar_site.lib.sql import connection_retire_if_dropped  # noqa: E402


def _hot_path_warm() -> None:
    """Load at start, not while serving the first requests, what the ingestion route imports lazily: the
    Redis client (rate limits, refresh claims) and the metric refresh task with the broker's transport."""
    if settings.REDIS_URL:
        import redis  # noqa: F401

    from metrics.tasks import metrics_refresh_task

    with metrics_refresh_task.app.connection_for_write() as broker:  # released at once; never connected
        broker.transport  # noqa: B018  (imports and builds the transport)


_hot_path_warm()


def application(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") == "POST" and path.startswith("/usage/"):
        slug = path[7:].rstrip("/")
        if slug and "/" not in slug:
            # A body over the ingestion limit is left unread: the route answers its own 413, after the key check.
            refusal = request_body_read(environ, max_bytes=settings.INGEST_MAX_BODY_BYTES, refuse_over_limit=False)
            if refusal is not None:
                return body_refusal_send(refusal, start_response)
            return ingest_application(environ, start_response)
    refusal = request_body_read(environ, max_bytes=settings.REQUEST_BODY_MAX_BYTES, refuse_over_limit=True)
    if refusal is not None:
        return body_refusal_send(refusal, start_response)
    # A connection the server dropped while idle (a restart) is replaced before the request, not
    # discovered by its first query (a 500); ingestion's route does the same.
    connection_retire_if_dropped()
    return django_application(environ, start_response)
