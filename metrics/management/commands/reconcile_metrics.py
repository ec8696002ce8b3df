"""Recompute every metric from raw records, in memory, and report each difference with stored values."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from metrics.engine.compute import metric_compute
from metrics.engine.refresh import records_range
from metrics.models import BillableMetric, MetricValue
from zenskar_site.lib.periods import period_floor, period_next


class Command(BaseCommand):
    help = "Check stored metric values against a recomputation from raw records (exit 1 on any difference)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--metric", help="Only this metric slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        metrics = BillableMetric.objects.filter(archived=False).select_related("usage_event").order_by("id")
        if options.get("metric"):
            metrics = metrics.filter(slug=options["metric"])
        differences = 0
        total = metrics.count()
        for index, metric in enumerate(metrics, start=1):
            bounds = records_range(usage_event_ids=list(metric.sources.values_list("id", flat=True)))
            expected: dict[tuple[Any, ...], str | None] = {}
            if bounds is not None:
                start = period_floor(bounds[0], metric.granularity)
                end = period_next(period_floor(bounds[1], metric.granularity), metric.granularity)
                for value in metric_compute(metric=metric, start=start, end=end):
                    expected[(value.customer_id, value.period_start, value.dimension_key)] = value.value
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
        if differences:
            sys.exit(1)
