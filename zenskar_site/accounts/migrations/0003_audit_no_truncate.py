"""The audit trail is append-only against TRUNCATE too (PostgreSQL).

0002's row triggers stop UPDATE and DELETE, but TRUNCATE fires no row trigger: on PostgreSQL it emptied
the table. A statement-level BEFORE TRUNCATE trigger refuses it, also when the table is reached by
`TRUNCATE ... CASCADE` from another table. SQLite has no TRUNCATE (its `DELETE FROM` is already refused).
The tests' flush between transactional tests truncates every table: tests/conftest.py disables this one
trigger for that flush only.
"""

from django.db import migrations

from zenskar_site.lib.migration_sql import vendor_sql

TABLE = "zenskar_site_auditentry"
TRIGGER = "audit_no_truncate"

# audit_append_only() is 0002's function: it raises 'audit entries are append-only'.
POSTGRES_UP = f"""
CREATE TRIGGER {TRIGGER} BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""
POSTGRES_DOWN = f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE};"


class Migration(migrations.Migration):
    dependencies = [("zenskar_site", "0002_audit_append_only_triggers")]

    operations = [
        migrations.RunPython(vendor_sql(postgres=POSTGRES_UP, sqlite=[]), vendor_sql(postgres=POSTGRES_DOWN, sqlite=[]))
    ]
