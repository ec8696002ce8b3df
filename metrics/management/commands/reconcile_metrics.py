"""Recompute every metric from raw records, in memory, and report each difference with stored values.

A metric that cannot be computed (a SQL metric past its time limit, say) is reported as such and the
others are still checked; the exit status is 1 when any metric differs or could not be computed.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from metrics.engine.compute import metric_compute
from metrics.engine.refresh import records_range
from metrics.models import BillableMetric, MetricValue
from zenskar_site.lib.periods import period_floor, period_next


class Command(BaseCommand):
    help = (
        "Check stored metric values against a recomputation from raw records "
        "(exit 1 on any difference or any metric that could not be computed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--metric", help="Only this metric slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        metrics = BillableMetric.objects.filter(archived=False).select_related("usage_event").order_by("id")
        if options.get("metric"):
            metrics = metrics.filter(slug=options["metric"])
        differences = failures = 0
        total = metrics.count()
        for index, metric in enumerate(metrics, start=1):
            try:
                expected = _recomputed(metric)
            except Exception as exc:  # any failure is this metric's own: reported, and the next one runs
                failures += 1
                self.stdout.write(f"[{index}/{total}] {metric.slug}: could not compute: {_error_line(exc)}")
                continue
            stored = {
                (v.customer_id, v.period_start, v.dimension_key): v.computed_value
                for v in MetricValue.objects.filter(metric=metric, stale=False)
            }
            for key in sorted(expected.keys() | stored.keys(), key=str):
                if expected.get(key) != stored.get(key):
                    differences += 1
                    customer_id, period_start, dimension = key
                    self.stdout.write(
                        f"DIFF {metric.slug} customer={customer_id} period={period_start:%Y-%m-%dT%H:%MZ} "
                        f"dimension={dimension or '-'} stored={stored.get(key)} recomputed={expected.get(key)}"
                    )
            self.stdout.write(f"[{index}/{total}] {metric.slug}: {len(expected)} values checked")
        self.stdout.write(f"{differences} difference(s)")
        if failures:
            self.stdout.write(f"{failures} metric(s) could not be computed")
        if differences or failures:
            sys.exit(1)


def _recomputed(metric: BillableMetric) -> dict[tuple[Any, ...], str | None]:
    bounds = records_range(usage_event_ids=list(metric.sources.values_list("id", flat=True)))
    expected: dict[tuple[Any, ...], str | None] = {}
    if bounds is not None:
        start = period_floor(bounds[0], metric.granularity)
        end = period_next(period_floor(bounds[1], metric.granularity), metric.granularity)
        for value in metric_compute(metric=metric, start=start, end=end):
            expected[(value.customer_id, value.period_start, value.dimension_key)] = value.value
    return expected


def _error_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__
