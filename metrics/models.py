from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from usage.models import Period, UsageEvent
from zenskar_site.accounts.models import Organisation


class MetricKind(models.TextChoices):
    BUILDER = "builder", "Builder"
    SQL = "sql", "SQL"


class Aggregation(models.TextChoices):
    COUNT = "count", "Count"
    SUM = "sum", "Sum"
    MIN = "min", "Min"
    MAX = "max", "Max"
    AVG = "avg", "Average"
    UNIQUE_COUNT = "unique_count", "Unique count"
    LATEST = "latest", "Latest"


class RecomputeState(models.TextChoices):
    IDLE = "idle", "Up to date"
    RUNNING = "running", "Recomputing"
    FAILED = "failed", "Failed"


class BillableMetric(models.Model):
    """A computation over usage-event records: a builder definition or a sandboxed SQL query."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="metrics")
    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=64)
    kind = models.CharField(max_length=8, choices=MetricKind.choices)
    usage_event = models.ForeignKey(UsageEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices, blank=True, default="")
    field = models.CharField(max_length=63, blank=True, default="")
    filters = models.JSONField(default=list, blank=True)
    group_by = models.JSONField(default=list, blank=True)
    sql = models.TextField(blank=True, default="")
    granularity = models.CharField(max_length=8, choices=Period.choices, default=Period.DAY)
    # Every usage event the metric reads: its builder event, or the tables its SQL names.
    sources = models.ManyToManyField(UsageEvent, related_name="metrics")
    version = models.PositiveIntegerField(default=1)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Progress of the background recompute of the whole history after a definition change or a failure.
    recompute_state = models.CharField(max_length=8, choices=RecomputeState.choices, default=RecomputeState.IDLE)
    recompute_version = models.PositiveIntegerField(default=0)
    recompute_total = models.PositiveIntegerField(default=0)
    recompute_done = models.PositiveIntegerField(default=0)
    recompute_error = models.TextField(blank=True, default="")
    # FAILED is the metric's durable record of what it still owes: its whole history, recomputed once
    # `recompute_retry_at` has passed (metrics.engine.refresh). The count of failures since its last
    # success sets the backoff.
    recompute_failures = models.PositiveIntegerField(default=0)
    recompute_retry_at = models.DateTimeField(null=True, blank=True)
    # A SQL metric whose organisation had used its SQL budget (METRIC_SQL_BUDGET_MS_PER_MINUTE) when its
    # periods were to be refreshed: the [start, end) ranges it still owes, as ISO 8601 pairs, computed
    # by the sweep from `deferred_until` on (metrics.engine.budget). Deferred is not failed.
    deferred_ranges = models.JSONField(default=list, blank=True)
    deferred_until = models.DateTimeField(null=True, blank=True)
    # Bumped by every deferral: a drain that computed what was owed when it started removes those ranges
    # only if nothing was deferred meanwhile (a range deferred again may hold records it did not see).
    deferred_seq = models.PositiveBigIntegerField(default=0)
    # While set and not passed, a drain task of the metric is queued or running (metrics.engine.refresh):
    # whoever claims it (a conditional UPDATE) enqueues the one drain; the drain releases it when it
    # ends. A claim whose worker died lapses at this time.
    drain_claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organisation", "slug"], name="metric_unique_slug"),
            models.CheckConstraint(condition=Q(kind__in=MetricKind.values), name="metric_kind_valid"),
            models.CheckConstraint(condition=Q(granularity__in=Period.values), name="metric_granularity_valid"),
            # A failed metric is always due for a retry at some time: the sweep looks for nothing else.
            models.CheckConstraint(
                condition=~Q(recompute_state=RecomputeState.FAILED) | Q(recompute_retry_at__isnull=False),
                name="metric_failed_has_retry_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class SqlBudgetCharge(models.Model):
    """Time an organisation's SQL metrics spent evaluating (timeouts included), one row per evaluation:
    insert-only, so concurrent workers never wait on each other to charge. Rows older than the
    window are pruned by the sweep."""

    id = models.BigAutoField(primary_key=True)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    charged_at = models.DateTimeField()
    milliseconds = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["organisation", "charged_at"], name="sql_budget_org_time_idx")]


class MetricValue(models.Model):
    """One metric's value for one customer, period and dimension.

    Amounts are exact decimal strings (SQLite has no exact numeric type); `computed_value` is what the
    engine last computed from raw records, `override_value` an admin's correction that wins.
    """

    id = models.BigAutoField(primary_key=True)
    metric = models.ForeignKey(BillableMetric, on_delete=models.CASCADE, related_name="values")
    customer_id = models.CharField(max_length=255)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    dimension = models.JSONField(null=True, blank=True)
    dimension_key = models.CharField(max_length=1024, blank=True, default="")
    computed_value = models.CharField(max_length=64, null=True, blank=True)
    override_value = models.CharField(max_length=64, null=True, blank=True)
    override_reason = models.TextField(blank=True, default="")
    # True when the records behind the value are gone (voided) but an override keeps the row.
    stale = models.BooleanField(default=False)
    metric_version = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "customer_id", "period_start", "dimension_key"], name="metric_value_unique_bucket"
            ),
        ]
        indexes = [models.Index(fields=["metric", "period_start"], name="metric_value_period_idx")]

    def __str__(self) -> str:
        return f"{self.metric_id} {self.customer_id} {self.period_start:%Y-%m-%d %H:%M}"

    @property
    def value(self) -> str | None:
        return self.override_value if self.override_value is not None else self.computed_value

    @property
    def value_decimal(self) -> Decimal | None:
        return Decimal(self.value) if self.value is not None else None


class SweepHeartbeat(models.Model):
    """When beat's metrics sweep last finished: one row, the health signal that a worker and beat run.

    The sweep runs every METRICS_SWEEP_SECONDS on a worker; an old `finished_at` means no beat, no
    worker, or no broker, so dirty hours and stalled recomputes are no longer picked up.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    finished_at = models.DateTimeField()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="sweep_heartbeat_single_row")]

    def __str__(self) -> str:
        return f"sweep finished {self.finished_at:%Y-%m-%d %H:%M:%S}"
