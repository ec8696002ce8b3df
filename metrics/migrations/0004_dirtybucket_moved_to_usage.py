"""DirtyBucket now belongs to the usage app (usage/migrations/0007); its table stays. State only."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0003_no_fk_constraint_on_hot_tables"),
        ("usage", "0007_dirtybucket_moved_from_metrics"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="DirtyBucket")],
            database_operations=[],
        ),
    ]
