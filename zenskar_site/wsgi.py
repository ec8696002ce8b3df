"""WSGI entry point.

`POST /usage/{api_slug}` takes a lean route around Django's middleware stack: it carries no
session, cookie or CSRF state, authenticates by API key, and is the one path whose cost is paid
per record stream. It still validates the Host header, honours SECURE_SSL_REDIRECT and sends
retires broken or expired database connections as Django's request signals do. Everything else goes to Django.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenskar_site.settings")

django_application = get_wsgi_application()

from usage.ingestion.wsgi import ingest_application  # noqa: E402  (after Django is set up)


def application(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") == "POST" and path.startswith("/usage/"):
        slug = path[7:].rstrip("/")
        if slug and "/" not in slug:
            return ingest_application(environ, start_response)
    return django_application(environ, start_response)
