"""DirtyBucket moves from the metrics app to usage (which writes its rows); its table stays.

State only: the table `metrics_dirtybucket`, its index and its rows are untouched (see
metrics/migrations/0004, which removes the model from the metrics app's state).
"""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0006_csv_import_progress_at"),
        ("metrics", "0003_no_fk_constraint_on_hot_tables"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="DirtyBucket",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("hour_start", models.DateTimeField()),
                        ("created_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                        (
                            "usage_event",
                            models.ForeignKey(
                                db_constraint=False,
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="usage.usageevent",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "metrics_dirtybucket",
                        "indexes": [models.Index(fields=["usage_event", "id"], name="dirty_bucket_event_idx")],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
