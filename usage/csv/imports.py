"""Importing a CSV file into a usage event (SPEC §6).

Upload (the bytes are kept in the `CsvImport` row), map columns to fields, validate every row with the
ingestion rules without storing anything, preview the first row-numbered errors, confirm; the import
then runs through the ingestion write path (`records_store`) in batches of 1,000, each committed
together with the import's checkpoint, so a crashed run resumes after its last batch and a rerun
stores nothing twice.

Decision: a file is imported whole or not at all. Confirming needs a validation with no invalid row;
the user fixes the file and uploads it again. Importing only the valid rows would leave a billing
gap that is easy to miss, and re-uploading the fixed file would then count the rows without
idempotency keys twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from usage.csv.reading import (
    ERRORS_KEPT,
    RowErrors,
    RowPlan,
    content_inspect,
    data_rows,
    mapping_propose,
    row_plan_compile,
)
from usage.dirty import records_changed_announce
from usage.ingestion import content_hash_of, ingest_context_internal, records_store
from usage.models import CsvImport, CsvImportStatus, UsageEvent, UsageRecord
from usage.schema import record_validator, timestamp_bounds
from usage.selectors import csv_import_get
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.enqueue import enqueue_on_commit
from zenskar_site.lib.errors import Conflict, Forbidden, NotFound, ValidationFailed

logger = logging.getLogger(__name__)

CSV_MAX_BYTES = 50 * 1024 * 1024
BATCH_SIZE = 1000
IMPORT_LABEL = "csv-import"


@dataclass
class CsvPreview:
    rows: int
    valid: int
    invalid: int
    duplicates: int  # valid rows that store nothing new: repeats in the file, or already stored
    errors: list[dict[str, Any]] = field(default_factory=list)


def _require_writer(actor: Actor) -> None:
    if not actor.can_write:
        raise Forbidden("Only admins can import usage.")


def csv_import_create(*, actor: Actor, usage_event_slug: str, filename: str, content: bytes) -> CsvImport:
    """Keep an uploaded file after checking it is UTF-8 CSV with a header; propose a column mapping."""
    _require_writer(actor)
    usage_event = UsageEvent.objects.filter(
        organisation=actor.organisation, api_slug=usage_event_slug, archived=False
    ).first()
    if usage_event is None:
        raise ValidationFailed(
            {"usage_event": [f"No active usage event with API slug {usage_event_slug!r} in this organisation."]}
        )
    if not content:
        raise ValidationFailed({"file": ["The file is empty."]})
    if len(content) > CSV_MAX_BYTES:
        raise ValidationFailed(
            {"file": [f"The file is {len(content):,} bytes; the limit is {CSV_MAX_BYTES // (1024 * 1024)} MiB."]}
        )
    found = content_inspect(content=content)
    return CsvImport.objects.create(
        organisation=actor.organisation,
        usage_event=usage_event,
        created_by=actor.user,
        filename=(filename or "").replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload.csv",
        content=content,
        delimiter=found.delimiter,
        columns=found.columns,
        sample=found.sample,
        mapping=mapping_propose(columns=found.columns, usage_event=usage_event),
        rows_total=found.rows,
    )


def csv_import_validate(*, actor: Actor, import_id: int, mapping: dict[str, str]) -> CsvPreview:
    """Validate every row with the ingestion rules, storing nothing but the verdict on the import."""
    _require_writer(actor)
    csv_import = csv_import_get(organisation=actor.organisation, import_id=import_id, with_content=True)
    if csv_import.status not in (CsvImportStatus.UPLOADED, CsvImportStatus.VALIDATED):
        raise Conflict(f"This import is {csv_import.status}; its mapping can no longer change.")
    usage_event = csv_import.usage_event
    # Every column gets a target ("" ignores it); a column the file lacks stays in, for row_plan_compile to refuse.
    mapping = {column: mapping.get(column) or "" for column in csv_import.columns} | {
        column: target for column, target in mapping.items() if column not in csv_import.columns
    }
    plan = row_plan_compile(columns=csv_import.columns, mapping=mapping, usage_event=usage_event)
    preview = _validate_rows(csv_import=csv_import, plan=plan, now=timezone.now())
    updated = CsvImport.objects.filter(
        id=csv_import.id, status__in=[CsvImportStatus.UPLOADED, CsvImportStatus.VALIDATED]
    ).update(
        mapping=mapping,
        status=CsvImportStatus.VALIDATED,
        rows_total=preview.rows,
        rows_invalid=preview.invalid,
        rows_duplicate=preview.duplicates,
        errors=preview.errors,
    )
    if not updated:
        raise Conflict("This import was confirmed while it was being validated.")
    return preview


def _validate_rows(*, csv_import: CsvImport, plan: RowPlan, now: dt.datetime) -> CsvPreview:
    usage_event = csv_import.usage_event
    columns = csv_import.columns
    validate = record_validator(usage_event.dataschema)
    bounds = timestamp_bounds(now=now, backfill=True)  # an import is a backfill: any age, but not the future
    errors = RowErrors()
    for path, message in plan.missing.items():
        errors.add(row=1, column="", field=path, value="", message=message)
    rows = invalid = duplicates = 0
    first_by_key: dict[str, tuple[int, str]] = {}
    unchecked: list[tuple[int, str, str, str]] = []  # (row, key, content hash, key cell) not yet looked up

    def check_stored() -> None:
        """Keys already stored for the usage event: the same content is a duplicate, other content an error."""
        nonlocal invalid, duplicates
        stored = {
            key: (record_id, content_hash)
            for key, record_id, content_hash in UsageRecord.objects.filter(
                usage_event=usage_event, idempotency_key__in=[key for _, key, _, _ in unchecked]
            ).values_list("idempotency_key", "id", "content_hash")
        }
        for row, key, content_hash, cell in unchecked:
            if key not in stored:
                continue
            record_id, stored_hash = stored[key]
            if stored_hash == content_hash:
                duplicates += 1
            else:
                invalid += 1
                message = (
                    f"The idempotency key {key!r} is already stored (record {record_id}) with different content; "
                    "use a new key for a new record."
                )
                errors.add_key_conflict(row=row, plan=plan, value=cell, message=message)
        unchecked.clear()

    for row, cells in data_rows(csv_import=csv_import):
        rows += 1
        if len(cells) != len(columns):
            invalid += 1
            errors.add(
                row=row,
                column="",
                field="",
                value="",
                message=f"The row has {len(cells)} cells; the header has {len(columns)} columns.",
            )
            continue
        record, problems = validate(plan.item(cells))
        if plan.missing:  # already reported once, on the header row
            problems = {path: found for path, found in problems.items() if path not in plan.missing}
        if record is not None:  # an import is a backfill: any age, but not the future
            problems = bounds.problems(record.timestamp) or problems
        if problems or plan.missing or record is None:
            invalid += 1
            errors.add_record_errors(row=row, cells=cells, plan=plan, columns=columns, errors=problems)
            continue
        key = record.idempotency_key
        if key is None:
            continue
        content_hash = content_hash_of(record)
        first = first_by_key.get(key)
        if first is None:
            first_by_key[key] = (row, content_hash)
            unchecked.append((row, key, content_hash, key))
            if len(unchecked) >= BATCH_SIZE:
                check_stored()
        elif first[1] == content_hash:
            duplicates += 1
        else:
            invalid += 1
            message = f"The idempotency key {key!r} is used on rows {first[0]} and {row} with different content."
            errors.add_key_conflict(row=row, plan=plan, value=key, message=message)
    if unchecked:
        check_stored()
    return CsvPreview(rows=rows, valid=rows - invalid, invalid=invalid, duplicates=duplicates, errors=errors.sorted())


def csv_import_confirm(*, actor: Actor, import_id: int, enqueue: bool = True) -> CsvImport:
    """Start importing a validated file (or resume a failed import from its checkpoint).

    `enqueue=False` leaves the run to the caller (the management command imports in-process).
    """
    _require_writer(actor)
    with transaction.atomic():
        csv_import = (
            CsvImport.objects.select_for_update(of=("self",))
            .select_related("usage_event")
            .defer("content")
            .filter(organisation=actor.organisation, id=import_id)
            .first()
        )
        if csv_import is None:
            raise NotFound(f"No CSV import {import_id} in this organisation.")
        status = csv_import.status
        if status == CsvImportStatus.VALIDATED:
            if csv_import.rows_invalid:
                raise ValidationFailed(
                    {"file": [f"{csv_import.rows_invalid:,} rows are invalid: fix the file and upload it again."]}
                )
            if not csv_import.rows_total:
                raise ValidationFailed({"file": ["The file has no data rows."]})
        elif status != CsvImportStatus.FAILED:
            raise Conflict(f"This import is {status}; only a validated or failed import can be started.")
        if csv_import.usage_event.archived:
            raise ValidationFailed(
                {"usage_event": [f"The usage event {csv_import.usage_event.api_slug!r} is archived."]}
            )
        # A resumed import forgets why it stopped; the rows it rejected stay listed.
        errors = [error for error in csv_import.errors if error.get("row") is not None]
        CsvImport.objects.filter(id=csv_import.id).update(
            status=CsvImportStatus.IMPORTING, finished_at=None, errors=errors, progress_at=timezone.now()
        )
        csv_import.status, csv_import.finished_at = CsvImportStatus.IMPORTING, None
        audit_record(
            actor=actor,
            action="csv_import.resume" if status == CsvImportStatus.FAILED else "csv_import.confirm",
            object_type="csv_import",
            object_id=str(csv_import.id),
            after={
                "usage_event": csv_import.usage_event.api_slug,
                "filename": csv_import.filename,
                "rows": csv_import.rows_total,
                "from_row": csv_import.rows_done,
            },
        )
        if enqueue:
            _enqueue(csv_import.id)
    return csv_import


def _enqueue(import_id: int) -> None:
    from usage.tasks import csv_import_task

    def failed(exc: Exception) -> None:  # the broker is down: say so, and let the user retry
        _fail(import_id, f"The import could not be started ({type(exc).__name__}); retry it.")

    enqueue_on_commit(csv_import_task, (import_id,), on_failure=failed)


def _fail(import_id: int, message: str) -> None:
    found = CsvImport.objects.filter(id=import_id).values_list("errors", flat=True).first()
    errors = [*(found or []), {"row": None, "column": "", "field": "", "value": "", "message": message}]
    CsvImport.objects.filter(id=import_id, status=CsvImportStatus.IMPORTING).update(
        status=CsvImportStatus.FAILED, errors=errors[-ERRORS_KEPT:], finished_at=timezone.now()
    )


Progress = Callable[[int, int], None]


def csv_import_run(*, import_id: int, progress: Progress | None = None) -> CsvImport | None:
    """Store a confirmed import's rows through the ingestion write path, 1,000 per batch.

    Each batch commits with the import's checkpoint (`rows_done` and the counts), under a lock on the
    import's row: a second run of the same import waits, then finds the checkpoint moved and stops; a
    run after a crash resumes after the last committed batch. Rows with idempotency keys would be
    duplicates on a rerun anyway; the checkpoint also covers rows without keys. Timestamps may be of
    any age (this is the backfill path); the future bound is the ingestion API's.
    """
    csv_import = CsvImport.objects.select_related("usage_event").filter(id=import_id).first()
    if csv_import is None or csv_import.status != CsvImportStatus.IMPORTING:
        return csv_import  # gone, not confirmed, or finished by an earlier run: nothing to do
    usage_event = csv_import.usage_event
    now = timezone.now()  # one clock reading for the run: the records' received_at
    done = csv_import.rows_done
    try:
        plan = row_plan_compile(columns=csv_import.columns, mapping=csv_import.mapping, usage_event=usage_event)
        context = ingest_context_internal(usage_event=usage_event, label=IMPORT_LABEL)
        errors = RowErrors(csv_import.errors)
        items: list[dict[str, Any]] = []
        batch: list[tuple[int, list[str]]] = []
        for position, (row, cells) in enumerate(data_rows(csv_import=csv_import)):
            if position < done:
                continue
            batch.append((row, cells))
            items.append(plan.item(cells))
            if len(items) == BATCH_SIZE:
                if not _store_batch(csv_import, context, batch, items, plan, errors, done, now):
                    return _reloaded(import_id)
                done += len(items)
                items, batch = [], []
                if progress is not None:
                    progress(done, csv_import.rows_total)
        if items:
            if not _store_batch(csv_import, context, batch, items, plan, errors, done, now):
                return _reloaded(import_id)
            done += len(items)
            if progress is not None:
                progress(done, csv_import.rows_total)
        CsvImport.objects.filter(id=import_id, status=CsvImportStatus.IMPORTING, rows_done=done).update(
            status=CsvImportStatus.DONE, finished_at=timezone.now()
        )
    except Exception as exc:
        logger.exception("CSV import %s failed", import_id)
        _fail(
            import_id,
            f"The import stopped: {type(exc).__name__}: {exc}. "
            f"Retry it to continue after the {done:,} rows already done.",
        )
        return _reloaded(import_id)
    records_changed_announce(usage_event_id=usage_event.id)
    return _reloaded(import_id)


def _reloaded(import_id: int) -> CsvImport:
    return CsvImport.objects.select_related("usage_event").defer("content").get(id=import_id)


def _store_batch(
    csv_import: CsvImport,
    context: Any,
    batch: list[tuple[int, list[str]]],
    items: list[dict[str, Any]],
    plan: RowPlan,
    errors: RowErrors,
    expected_done: int,
    now: dt.datetime,
) -> bool:
    """Store one batch and move the checkpoint in one transaction; False when another run moved it first."""
    with transaction.atomic():
        state = (
            CsvImport.objects.select_for_update().filter(id=csv_import.id).values_list("status", "rows_done").first()
        )
        if state != (CsvImportStatus.IMPORTING, expected_done):
            return False
        result = records_store(context=context, items=items, backfill=True, now=now)
        for outcome in result.results:
            if outcome["status"] == "rejected":
                row, cells = batch[outcome["index"]]
                errors.add_record_errors(
                    row=row, cells=cells, plan=plan, columns=csv_import.columns, errors=outcome["errors"]
                )
        CsvImport.objects.filter(id=csv_import.id).update(
            rows_done=F("rows_done") + len(items),
            accepted=F("accepted") + result.accepted,
            duplicates=F("duplicates") + result.duplicates,
            rejected=F("rejected") + result.rejected,
            errors=errors.sorted(),
            progress_at=timezone.now(),
        )
    return True


def csv_imports_stalled_claim(*, older_than_seconds: float, limit: int = 100) -> list[int]:
    """Ids of imports that stopped moving while importing (their task was lost), each claimed once.

    The claim moves `progress_at` with a conditional UPDATE, so two sweeps never both take one import,
    and a claimed import that still does not move is claimed again after another interval.
    """
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than_seconds)
    stalled = Q(status=CsvImportStatus.IMPORTING) & (Q(progress_at__lt=cutoff) | Q(progress_at__isnull=True))
    claimed = []
    for import_id in CsvImport.objects.filter(stalled).order_by("id").values_list("id", flat=True)[:limit]:
        if CsvImport.objects.filter(stalled, id=import_id).update(progress_at=now):
            claimed.append(import_id)
    return claimed
