from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from usage.csv_io import csv_import_run
from usage.services import ingestion_errors_prune

PRUNE_BATCH = 5000


@shared_task(ignore_result=True)
def ingestion_errors_prune_task() -> int:
    """Drop error-log rows past retention, one bounded batch per run; re-enqueue while more remain."""
    cutoff = timezone.now() - dt.timedelta(days=settings.INGEST_ERROR_RETENTION_DAYS)
    deleted = ingestion_errors_prune(older_than=cutoff, batch_size=PRUNE_BATCH)
    if deleted == PRUNE_BATCH:
        ingestion_errors_prune_task.delay()
    return deleted


@shared_task(ignore_result=True, acks_late=True)
def csv_import_task(import_id: int) -> str | None:
    """Import a confirmed CSV; a second delivery waits for, then skips, the batches the first one stored."""
    csv_import = csv_import_run(import_id=import_id)
    return csv_import.status if csv_import is not None else None
