"""The audit trail is append-only in the database too: UPDATE and DELETE raise."""

from django.db import migrations

from zenskar_site.lib.migration_sql import vendor_sql

TABLE = "zenskar_site_auditentry"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"""
POSTGRES_DOWN = f"DROP TRIGGER IF EXISTS audit_no_update ON {TABLE}; DROP FUNCTION IF EXISTS audit_append_only();"

SQLITE_UP = [
    f"CREATE TRIGGER audit_no_update BEFORE UPDATE ON {TABLE} BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;",
    f"CREATE TRIGGER audit_no_delete BEFORE DELETE ON {TABLE} BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS audit_no_update;", "DROP TRIGGER IF EXISTS audit_no_delete;"]


class Migration(migrations.Migration):
    dependencies = [("zenskar_site", "0001_initial")]

    operations = [
        migrations.RunPython(
            vendor_sql(postgres=POSTGRES_UP, sqlite=SQLITE_UP), vendor_sql(postgres=POSTGRES_DOWN, sqlite=SQLITE_DOWN)
        )
    ]
