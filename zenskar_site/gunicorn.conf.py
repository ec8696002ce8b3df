"""gunicorn settings for production mode: `gunicorn -c zenskar_site/gunicorn.conf.py zenskar_site.wsgi`.

Sync workers by default: each request is a short database transaction, so processes scale with
cores and more web machines scale it further. WEB_CONCURRENCY, GUNICORN_WORKER_CLASS (gthread keeps
client connections alive) and GUNICORN_THREADS override the defaults.
"""

import gc
import multiprocessing
import os
from typing import Any

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Two processes per core plus one (gunicorn's own advice): a request is CPU work in Python plus a wait
# on the database (the commit's flush to disk), about as long again for a single record, and a sync
# worker's core idles while it waits. Measured on 2 cores, single records taking turns with the same
# load on 3, 4, 5, 7 and 9 workers: 4 and 5 served 14% and 21% more than 3, 7 and 9 another 7%
# (and a connection more each); 1,000-record batches the same on 3 and 5.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = 30
graceful_timeout = 10
keepalive = 5
max_requests = 20000
max_requests_jitter = 2000
# The TLS-terminating proxy in front sets X-Forwarded-Proto; Django trusts it via SECURE_PROXY_SSL_HEADER.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("ACCESS_LOG") or None


def post_worker_init(worker: Any) -> None:
    """Once the worker has loaded the application: its modules, settings and caches live as long as the
    process, so they are moved out of the garbage collector's reach. Otherwise every full collection (one
    every few batch requests, as each batch leaves thousands of objects promoted) scans them all again:
    about 2 µs per record of a 1,000-record batch (measured in-process with bench/ingest.py's batch)."""
    gc.freeze()
