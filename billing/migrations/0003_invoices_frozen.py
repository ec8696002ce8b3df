"""Approved invoices are frozen in the database too (SPEC §9 "the database refuses changes").

Once an invoice is approved (or paid, partially paid, void) its lines refuse INSERT, UPDATE and DELETE,
and the invoice itself refuses DELETE and any UPDATE of what was billed (customer, contract, currency,
period, number, dates, subtotal, tax rate, tax, total) or a return to a live status. The settlement
columns (status among the frozen ones, amount credited, paid and due, the void's reason and time) still
move: credit notes, payments and voids change them. Credit notes are append-only.

A transactional test's flush: PostgreSQL truncates (no row trigger fires); on SQLite see
tests/billing/test_invoice_*.py, which drop and restore these triggers around such a flush.
"""

from collections.abc import Sequence

from django.db import migrations

from zenskar_site.lib.migration_sql import vendor_sql

INVOICE = "billing_invoice"
LINE = "billing_invoiceline"
CREDIT_NOTE = "billing_creditnote"
FROZEN = "('approved', 'partially_paid', 'paid', 'void')"
BILLED = (
    "customer_id",
    "contract_id",
    "kind",
    "currency",
    "period_start",
    "period_end",
    "number",
    "issue_date",
    "due_date",
    "subtotal",
    "tax_rate",
    "tax",
    "total",
    "approved_at",
)



def postgres_invoice_frozen(billed: Sequence[str]) -> str:
    """The function behind the invoice's trigger: a frozen invoice refuses DELETE, a return to a live
    status and any change to a column of `billed` (0005 adds one)."""
    return f"""
CREATE OR REPLACE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status IN {FROZEN} THEN
            RAISE EXCEPTION 'invoice % is approved: it cannot be deleted', OLD.number;
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status IN {FROZEN} AND (
        NEW.status NOT IN {FROZEN}
        OR {" OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in billed)}
    ) THEN
        RAISE EXCEPTION 'invoice % is approved: its lines and totals are frozen', OLD.number;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""


def sqlite_invoice_frozen_update(billed: Sequence[str]) -> str:
    """SQLite's trigger for the same rule on UPDATE."""
    return f"""CREATE TRIGGER billing_invoice_frozen_update BEFORE UPDATE ON {INVOICE}
        WHEN OLD.status IN {FROZEN} AND (
            NEW.status NOT IN {FROZEN} OR {" OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in billed)})
        BEGIN SELECT RAISE(ABORT, 'the invoice is approved: its lines and totals are frozen'); END;"""


POSTGRES_UP = postgres_invoice_frozen(BILLED) + f"""CREATE TRIGGER billing_invoice_frozen BEFORE UPDATE OR DELETE ON {INVOICE}
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_frozen();

CREATE OR REPLACE FUNCTION billing_invoice_line_frozen() RETURNS trigger AS $$
DECLARE
    target uuid;
BEGIN
    IF TG_OP = 'INSERT' THEN target := NEW.invoice_id; ELSE target := OLD.invoice_id; END IF;
    IF EXISTS (SELECT 1 FROM {INVOICE} WHERE id = target AND status IN {FROZEN})
       OR (TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM {INVOICE} WHERE id = NEW.invoice_id AND status IN {FROZEN})) THEN
        RAISE EXCEPTION 'the invoice is approved: its lines are frozen';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoice_line_frozen BEFORE INSERT OR UPDATE OR DELETE ON {LINE}
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_line_frozen();

CREATE OR REPLACE FUNCTION billing_credit_note_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'credit notes are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_credit_note_append_only BEFORE UPDATE OR DELETE ON {CREDIT_NOTE}
    FOR EACH ROW EXECUTE FUNCTION billing_credit_note_append_only();
"""
POSTGRES_DOWN = f"""
DROP TRIGGER IF EXISTS billing_invoice_frozen ON {INVOICE};
DROP FUNCTION IF EXISTS billing_invoice_frozen();
DROP TRIGGER IF EXISTS billing_invoice_line_frozen ON {LINE};
DROP FUNCTION IF EXISTS billing_invoice_line_frozen();
DROP TRIGGER IF EXISTS billing_credit_note_append_only ON {CREDIT_NOTE};
DROP FUNCTION IF EXISTS billing_credit_note_append_only();
"""

_FROZEN_INVOICE = f"(SELECT status FROM {INVOICE} WHERE id = {{row}}.invoice_id) IN {FROZEN}"
SQLITE_UP = [
    sqlite_invoice_frozen_update(BILLED),
    f"""CREATE TRIGGER billing_invoice_frozen_delete BEFORE DELETE ON {INVOICE} WHEN OLD.status IN {FROZEN}
        BEGIN SELECT RAISE(ABORT, 'the invoice is approved: it cannot be deleted'); END;""",
    f"""CREATE TRIGGER billing_invoice_line_frozen_insert BEFORE INSERT ON {LINE}
        WHEN {_FROZEN_INVOICE.format(row="NEW")}
        BEGIN SELECT RAISE(ABORT, 'the invoice is approved: its lines are frozen'); END;""",
    f"""CREATE TRIGGER billing_invoice_line_frozen_update BEFORE UPDATE ON {LINE}
        WHEN {_FROZEN_INVOICE.format(row="OLD")} OR {_FROZEN_INVOICE.format(row="NEW")}
        BEGIN SELECT RAISE(ABORT, 'the invoice is approved: its lines are frozen'); END;""",
    f"""CREATE TRIGGER billing_invoice_line_frozen_delete BEFORE DELETE ON {LINE}
        WHEN {_FROZEN_INVOICE.format(row="OLD")}
        BEGIN SELECT RAISE(ABORT, 'the invoice is approved: its lines are frozen'); END;""",
    f"""CREATE TRIGGER billing_credit_note_no_update BEFORE UPDATE ON {CREDIT_NOTE}
        BEGIN SELECT RAISE(ABORT, 'credit notes are append-only'); END;""",
    f"""CREATE TRIGGER billing_credit_note_no_delete BEFORE DELETE ON {CREDIT_NOTE}
        BEGIN SELECT RAISE(ABORT, 'credit notes are append-only'); END;""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS billing_invoice_frozen_update;",
    "DROP TRIGGER IF EXISTS billing_invoice_frozen_delete;",
    "DROP TRIGGER IF EXISTS billing_invoice_line_frozen_insert;",
    "DROP TRIGGER IF EXISTS billing_invoice_line_frozen_update;",
    "DROP TRIGGER IF EXISTS billing_invoice_line_frozen_delete;",
    "DROP TRIGGER IF EXISTS billing_credit_note_no_update;",
    "DROP TRIGGER IF EXISTS billing_credit_note_no_delete;",
]


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_invoices")]

    operations = [
        migrations.RunPython(
            vendor_sql(postgres=POSTGRES_UP, sqlite=SQLITE_UP), vendor_sql(postgres=POSTGRES_DOWN, sqlite=SQLITE_DOWN)
        )
    ]
