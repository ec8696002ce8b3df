"""Approval freezes the parties too: `Invoice.parties` keeps the seller's and the customer's details as
the document shows them, copied when the invoice is approved, and the database refuses to change them
on an approved (or paid, partially paid, void) invoice, as it refuses changes to its lines and totals.

Invoices approved before this migration get the details as they are when it runs: the best there is.
"""

from importlib import import_module
from typing import Any

from django.db import migrations, models

from zenskar_site.lib.migration_sql import vendor_sql

frozen = import_module("billing.migrations.0003_invoices_frozen")
BILLED = (*frozen.BILLED, "parties")
FROZEN_STATUSES = ("approved", "partially_paid", "paid", "void")


def parties_copy(apps: Any, schema_editor: Any) -> None:
    from billing.invoicing.document import parties_of

    invoices = apps.get_model("billing", "Invoice").objects
    approved = invoices.filter(status__in=FROZEN_STATUSES, parties__isnull=True).select_related("organisation", "customer")
    for invoice in approved.iterator():
        parties = parties_of(seller_name=invoice.organisation.name, customer=invoice.customer)
        invoices.filter(pk=invoice.pk).update(parties=parties)  # 0003's trigger does not guard this column


def triggers(billed: tuple[str, ...]) -> Any:
    return vendor_sql(
        postgres=frozen.postgres_invoice_frozen(billed),
        sqlite=[
            "DROP TRIGGER IF EXISTS billing_invoice_frozen_update;",
            frozen.sqlite_invoice_frozen_update(billed),
        ],
    )


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_invoice_lines_frozen_per_statement")]

    operations = [
        migrations.AddField(
            model_name="invoice",
            name="parties",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(parties_copy, migrations.RunPython.noop),
        migrations.RunPython(triggers(BILLED), triggers(frozen.BILLED)),
    ]
