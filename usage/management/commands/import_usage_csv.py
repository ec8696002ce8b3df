"""`manage.py import_usage_csv`: the dashboard's CSV import from a shell, run in-process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage.csv.imports import CSV_MAX_BYTES, csv_import_confirm, csv_import_create, csv_import_run, csv_import_validate
from usage.models import CsvImportStatus
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.errors import DomainError

ERRORS_PRINTED = 20


class Command(BaseCommand):
    help = (
        "Import usage records from a CSV file into a usage event: validate every row, show the errors, "
        "ask for confirmation, then import with progress. Timestamps may be of any age (a backfill)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organisation", required=True, help="The organisation's name (or id).")
        parser.add_argument("--usage-event", required=True, help="The usage event's API slug.")
        parser.add_argument("--file", required=True, help="A UTF-8 CSV file whose first row names the columns.")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="COLUMN=TARGET",
            help="Map a column to customer_id, timestamp, idempotency_key or data.<field> (empty: ignore it). "
            "Columns named like a field are mapped to it without this.",
        )
        parser.add_argument("--yes", action="store_true", help="Import without asking for confirmation.")

    def handle(self, *args: Any, **options: Any) -> None:
        organisation = _organisation(options["organisation"])
        actor = system_actor(organisation=organisation)
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No file at {path}.")
        if path.stat().st_size > CSV_MAX_BYTES:
            raise CommandError(f"{path} is over the limit of {CSV_MAX_BYTES // (1024 * 1024)} MiB.")
        try:
            csv_import = csv_import_create(
                actor=actor, usage_event_slug=options["usage_event"], filename=path.name, content=path.read_bytes()
            )
            mapping = dict(csv_import.mapping)
            for entry in options["map"]:
                column, sep, target = entry.partition("=")
                if not sep:
                    raise CommandError(f"--map {entry!r}: write COLUMN=TARGET (TARGET empty to ignore the column).")
                mapping[column.strip()] = target.strip()
            preview = csv_import_validate(actor=actor, import_id=csv_import.id, mapping=mapping)
        except DomainError as exc:
            raise CommandError(_messages(exc)) from None

        self.stdout.write("Mapping: " + ", ".join(f"{c} -> {t or '(ignored)'}" for c, t in mapping.items()))
        self.stdout.write(
            f"{preview.rows:,} rows: {preview.valid:,} valid ({preview.duplicates:,} already stored or repeated), "
            f"{preview.invalid:,} invalid."
        )
        for error in preview.errors[:ERRORS_PRINTED]:
            where = f"row {error['row']}" + (f", column {error['column']!r}" if error["column"] else "")
            value = f" (value {error['value']!r})" if error["value"] else ""
            self.stdout.write(f"  {where}: {error['message']}{value}")
        if preview.invalid:
            raise CommandError(
                f"{preview.invalid:,} invalid rows: nothing was imported. Fix the file and run the command again."
            )
        if not options["yes"]:
            answer = input(f"Import {preview.rows:,} rows into {csv_import.usage_event.api_slug!r}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("Nothing was imported.")
                return
        try:
            csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
        except DomainError as exc:
            raise CommandError(_messages(exc)) from None
        finished = csv_import_run(import_id=csv_import.id, progress=self._progress)
        self.stderr.write("")
        if finished is None or finished.status != CsvImportStatus.DONE:
            problems = [e["message"] for e in (finished.errors if finished else []) if e.get("row") is None]
            raise CommandError("The import failed. " + " ".join(problems))
        self.stdout.write(
            f"Imported {finished.rows_done:,} rows: {finished.accepted:,} accepted, "
            f"{finished.duplicates:,} duplicates, {finished.rejected:,} rejected."
        )
        for error in finished.errors[:ERRORS_PRINTED]:
            self.stdout.write(f"  row {error['row']}: {error['message']}")

    def _progress(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        self.stderr.write(f"\rImporting: {done:,} / {total:,} rows ({percent}%)", ending="")
        self.stderr.flush()


def _organisation(wanted: str) -> Organisation:
    organisation = Organisation.objects.filter(name=wanted).first()
    if organisation is None:
        try:
            organisation = Organisation.objects.filter(id=uuid.UUID(wanted)).first()
        except ValueError:
            organisation = None
    if organisation is None:
        raise CommandError(f"No organisation named {wanted!r}.")
    return organisation


def _messages(exc: DomainError) -> str:
    if not exc.errors:
        return exc.detail
    return " ".join(message for messages in exc.errors.values() for message in messages)
