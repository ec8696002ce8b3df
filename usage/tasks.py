from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from usage.csv.imports import csv_import_run, csv_imports_stalled_claim
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


@shared_task(ignore_result=True)
def csv_imports_resume_task() -> list[int]:
    """Enqueue again the imports whose task was lost (they stay "importing" and stop moving otherwise).

    Safe beside a run that is only slow: a second run of one import waits for the first's lock, then
    finds the checkpoint moved and stops.
    """
    claimed = csv_imports_stalled_claim(older_than_seconds=settings.CSV_IMPORT_STALL_SECONDS)
    for import_id in claimed:
        csv_import_task.delay(import_id)
    return claimed
