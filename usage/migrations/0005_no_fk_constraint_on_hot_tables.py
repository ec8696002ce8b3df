"""Records keep their usage event without a foreign-key constraint.

PostgreSQL checks a foreign key by locking the referenced row (FOR KEY SHARE) once per inserted
row, and every writer of a usage event locks that same row: on the single-record ingestion path
that lock cost about a quarter of the throughput. The reference is kept by other means:

- the ingestion statement writes only when the usage event exists (usage/ingestion.py);
- usage events are archived, never deleted, and this trigger refuses to delete one that still has
  records, in the database (Django's on_delete=PROTECT refuses it before that);
- on SQLite (embedded mode, no such contention) a trigger also refuses a record whose usage event
  does not exist.
"""

import django.db.models.deletion
from django.db import migrations, models

from zenskar_site.lib.migration_sql import vendor_sql

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION usage_event_keep_records() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM usage_usagerecord WHERE usage_event_id = OLD.id) THEN
        RAISE EXCEPTION 'usage event % still has usage records; archive it instead', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER usage_event_keep_records BEFORE DELETE ON usage_usageevent
    FOR EACH ROW EXECUTE FUNCTION usage_event_keep_records();
"""
POSTGRES_DOWN = (
    "DROP TRIGGER IF EXISTS usage_event_keep_records ON usage_usageevent; "
    "DROP FUNCTION IF EXISTS usage_event_keep_records();"
)
SQLITE_UP = [
    """CREATE TRIGGER usage_event_keep_records BEFORE DELETE ON usage_usageevent
       WHEN EXISTS (SELECT 1 FROM usage_usagerecord WHERE usage_event_id = OLD.id)
       BEGIN SELECT RAISE(ABORT, 'usage event still has usage records; archive it instead'); END;""",
    """CREATE TRIGGER usage_record_needs_event BEFORE INSERT ON usage_usagerecord
       WHEN NOT EXISTS (SELECT 1 FROM usage_usageevent WHERE id = NEW.usage_event_id)
       BEGIN SELECT RAISE(ABORT, 'usage record for a usage event that does not exist'); END;""",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS usage_event_keep_records;", "DROP TRIGGER IF EXISTS usage_record_needs_event;"]


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0004_drop_redundant_fk_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="usagerecord",
            name="usage_event",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="records",
                to="usage.usageevent",
            ),
        ),
        migrations.RunPython(
            vendor_sql(postgres=POSTGRES_UP, sqlite=SQLITE_UP), vendor_sql(postgres=POSTGRES_DOWN, sqlite=SQLITE_DOWN)
        ),
    ]
