"""A failed metric is retried with backoff: its failure count and the time of its next retry.

Metrics that failed before this change are due at once (and count one failure), so the constraint
"a failed metric has a retry time" holds from the start.
"""

from typing import Any

from django.db import migrations, models
from django.utils import timezone


def failed_metrics_due_now(apps: Any, schema_editor: Any) -> None:
    BillableMetric = apps.get_model("metrics", "BillableMetric")
    BillableMetric.objects.filter(recompute_state="failed").update(
        recompute_failures=1, recompute_retry_at=timezone.now()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0004_dirtybucket_moved_to_usage"),
    ]

    operations = [
        migrations.AddField(
            model_name="billablemetric",
            name="recompute_failures",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="billablemetric",
            name="recompute_retry_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(failed_metrics_due_now, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="billablemetric",
            constraint=models.CheckConstraint(
                condition=models.Q(("recompute_state", "failed"), _negated=True)
                | models.Q(recompute_retry_at__isnull=False),
                name="metric_failed_has_retry_at",
            ),
        ),
    ]
