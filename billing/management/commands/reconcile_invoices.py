"""Check that every draft equals a fresh computation from the current metric values (SPEC §9).

Exit 1 when any draft differs (with `--fix` they are recomputed, and the exit is still 1 so a cron sees
it happened). Approved invoices whose usage changed since approval are reported as drift: they never
change (an increase belongs on the next draft as an adjustment, a decrease is a credit note).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.invoicing.services import drafts_recompute, invoices_reconcile


class Command(BaseCommand):
    help = "Compare every draft invoice with a fresh computation; exit 1 on a difference."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="Recompute the drafts that differ.")

    def handle(self, *args: Any, **options: Any) -> None:
        drafts, drifted = invoices_reconcile()
        for invoice in drafts:
            self.stdout.write(f"DRAFT DIFFERS {invoice.id} contract {invoice.contract_id} {invoice.period_start}")
        if options["fix"] and (failed := drafts_recompute(drafts)):
            self.stdout.write(f"{failed} draft(s) could not be recomputed (logged).")
        for invoice in drifted:
            self.stdout.write(
                f"APPROVED DRIFT {invoice.number} ({invoice.id}): usage changed since approval; the invoice stays"
            )
        self.stdout.write(f"{len(drafts)} draft(s) differ, {len(drifted)} approved invoice(s) drifted.")
        if drafts:
            sys.exit(1)
