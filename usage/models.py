from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from zenskar_site.accounts.models import Organisation


class UsageEventKind(models.TextChoices):
    EVENT = "event", "Event (individual timestamped actions)"
    AGGREGATE = "aggregate", "Aggregate (a pre-summed value per period)"


class Period(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day"
    MONTH = "month", "Month"


class UsageEvent(models.Model):
    """A usage-event definition: an ingestion endpoint and a typed table of records."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="usage_events")
    name = models.CharField(max_length=200)
    api_slug = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=UsageEventKind.choices, default=UsageEventKind.EVENT)
    aggregate_period = models.CharField(max_length=8, choices=Period.choices, null=True, blank=True)
    description = models.TextField(blank=True, default="")
    dataschema = models.JSONField()
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organisation", "api_slug"], name="usage_event_unique_slug"),
            models.CheckConstraint(condition=Q(kind__in=UsageEventKind.values), name="usage_event_kind_valid"),
            models.CheckConstraint(
                condition=(Q(kind=UsageEventKind.EVENT) & Q(aggregate_period__isnull=True))
                | (Q(kind=UsageEventKind.AGGREGATE) & Q(aggregate_period__in=Period.values)),
                name="usage_event_period_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.api_slug})"


class UsageRecord(models.Model):
    """One stored row of a usage event: an event, or an aggregate value for a period."""

    id = models.BigAutoField(primary_key=True)
    # No single-column index: the composite indexes below all start with usage_event.
    # No foreign-key constraint either: PostgreSQL checks one by locking the parent row (FOR KEY
    # SHARE) for every inserted record, and every writer of a usage event locks the same row. That
    # cost a quarter of single-record ingestion throughput. The reference holds anyway: the write
    # statement checks the usage event exists, and a trigger refuses to delete a usage event that
    # still has records (migration 0005); Django's PROTECT refuses it too.
    usage_event = models.ForeignKey(
        UsageEvent, on_delete=models.PROTECT, related_name="records", db_index=False, db_constraint=False
    )
    customer_id = models.CharField(max_length=255)
    timestamp = models.DateTimeField()
    # Start of the aggregate period the timestamp falls in (aggregate usage events only).
    period_start = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # SHA-256 of the validated content: tells a retried duplicate from a reused key.
    content_hash = models.CharField(max_length=64)
    received_at = models.DateTimeField()
    voided = models.BooleanField(default=False)
    superseded = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["usage_event", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="usage_record_unique_idempotency_key",
            ),
            models.UniqueConstraint(
                fields=["usage_event", "customer_id", "period_start"],
                condition=Q(period_start__isnull=False, superseded=False),
                name="usage_record_one_current_aggregate",
            ),
        ]
        indexes = [
            models.Index(fields=["usage_event", "timestamp"], name="usage_record_event_ts_idx"),
            models.Index(fields=["usage_event", "customer_id", "timestamp"], name="usage_record_event_cust_ts_idx"),
            # The dashboard's volume chart: records received per hour/day of one usage event.
            models.Index(fields=["usage_event", "received_at"], name="usage_record_event_recv_idx"),
        ]

    def __str__(self) -> str:
        return f"record {self.pk} of {self.usage_event_id}"


class IngestionError(models.Model):
    """A rejected record, kept so a user can see why it was not counted."""

    id = models.BigAutoField(primary_key=True)
    usage_event = models.ForeignKey(
        UsageEvent, on_delete=models.CASCADE, related_name="ingestion_errors", db_index=False
    )
    received_at = models.DateTimeField(db_index=True)
    payload = models.JSONField(null=True)
    payload_truncated = models.BooleanField(default=False)
    errors = models.JSONField()
    api_key_prefix = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["usage_event", "-id"], name="ingestion_error_event_idx")]

    def __str__(self) -> str:
        return f"error {self.pk} of {self.usage_event_id}"


class CsvImportStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    VALIDATED = "validated", "Validated"
    IMPORTING = "importing", "Importing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class CsvImport(models.Model):
    """An uploaded CSV of usage, its column mapping, its validation and the progress of its import.

    The file's bytes live in the row, so any web or worker machine can read them; nothing is stored in
    the usage event's table before the import is confirmed.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="csv_imports")
    usage_event = models.ForeignKey(UsageEvent, on_delete=models.CASCADE, related_name="csv_imports")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    filename = models.CharField(max_length=255)
    content = models.BinaryField()
    delimiter = models.CharField(max_length=1, default=",")
    # The header row's column names, in file order.
    columns = models.JSONField(default=list)
    # CSV column name -> "customer_id" | "timestamp" | "idempotency_key" | "data.<field>" | "" (ignored).
    mapping = models.JSONField(default=dict)
    # The first few data rows (cells as text), shown next to each column while mapping.
    sample = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=CsvImportStatus.choices, default=CsvImportStatus.UPLOADED)
    # Data rows in the file, and the validation's verdict on them.
    rows_total = models.PositiveIntegerField(default=0)
    rows_invalid = models.PositiveIntegerField(default=0)
    rows_duplicate = models.PositiveIntegerField(default=0)
    # The import's checkpoint: data rows already stored (committed with each batch), and their outcomes.
    rows_done = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    # The first row-numbered problems: [{"row", "column", "field", "value", "message"}].
    errors = models.JSONField(default=list)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the import last moved (confirmed, or a batch stored): an import that stops moving lost its
    # task, and the sweep (usage.tasks.csv_imports_resume_task) enqueues it again.
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=CsvImportStatus.values), name="csv_import_status_valid"),
            models.CheckConstraint(condition=Q(rows_done__lte=models.F("rows_total")), name="csv_import_done_le_total"),
        ]
        indexes = [models.Index(fields=["organisation", "-id"], name="csv_import_org_idx")]

    def __str__(self) -> str:
        return f"CSV import {self.pk} ({self.filename})"


class DirtyBucket(models.Model):
    """An hour of a usage event whose records changed; the engine recomputes the metric periods over it.

    Append-only from the writers' side (no unique constraint, so concurrent ingestion never contends
    on one row); the engine deletes exactly the rows it processed, in the transaction that stores
    the recomputed values, so a crash leaves them for the next run.
    """

    id = models.BigAutoField(primary_key=True)
    # No foreign-key constraint, for the reason given on UsageRecord.usage_event: ingestion writes a
    # mark with every request.
    usage_event = models.ForeignKey(
        UsageEvent, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    hour_start = models.DateTimeField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        # Created by the metrics app, which reads these marks; ingestion and corrections write them.
        db_table = "metrics_dirtybucket"
        indexes = [models.Index(fields=["usage_event", "id"], name="dirty_bucket_event_idx")]
