"""PostgreSQL: a frozen invoice's lines refuse INSERT in one check per statement, not one per line.

0003's row trigger looked the invoice up once per inserted line: for the generator's statement of a
few hundred lines that was most of the statement's time. The INSERT check becomes a statement trigger
over the inserted rows (a transition table), which refuses the whole statement when any of its lines
belongs to an approved (or paid, partially paid, void) invoice: the same rule, one join. UPDATE and
DELETE keep 0003's row trigger. SQLite keeps 0003's triggers.
"""

from django.db import migrations

from zenskar_site.lib.migration_sql import vendor_sql

LINE = "billing_invoiceline"
INVOICE = "billing_invoice"
FROZEN = "('approved', 'partially_paid', 'paid', 'void')"

POSTGRES_UP = f"""
DROP TRIGGER billing_invoice_line_frozen ON {LINE};
CREATE TRIGGER billing_invoice_line_frozen BEFORE UPDATE OR DELETE ON {LINE}
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_line_frozen();

CREATE OR REPLACE FUNCTION billing_invoice_lines_frozen_insert() RETURNS trigger AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM inserted JOIN {INVOICE} invoice ON invoice.id = inserted.invoice_id
        WHERE invoice.status IN {FROZEN}
    ) THEN
        RAISE EXCEPTION 'the invoice is approved: its lines are frozen';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoice_lines_frozen_insert AFTER INSERT ON {LINE}
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION billing_invoice_lines_frozen_insert();
"""
POSTGRES_DOWN = f"""
DROP TRIGGER IF EXISTS billing_invoice_lines_frozen_insert ON {LINE};
DROP FUNCTION IF EXISTS billing_invoice_lines_frozen_insert();
DROP TRIGGER billing_invoice_line_frozen ON {LINE};
CREATE TRIGGER billing_invoice_line_frozen BEFORE INSERT OR UPDATE OR DELETE ON {LINE}
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_line_frozen();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_invoices_frozen")]

    operations = [
        migrations.RunPython(
            vendor_sql(postgres=POSTGRES_UP, sqlite=()), vendor_sql(postgres=POSTGRES_DOWN, sqlite=())
        )
    ]
