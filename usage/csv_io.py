"""CSV in and out of a usage event (SPEC §6).

Import: upload (the bytes are kept in the `CsvImport` row), map columns to fields, validate every row
with the ingestion rules without storing anything, preview the first row-numbered errors, confirm;
the import then runs through the ingestion write path (`records_store`) in batches of 1,000, each
committed together with the import's checkpoint, so a crashed run resumes after its last batch and
a rerun stores nothing twice.

Decision: a file is imported whole or not at all. Confirming needs a validation with no invalid row;
the user fixes the file and uploads it again. Importing only the valid rows would leave a billing
gap that is easy to miss, and re-uploading the fixed file would then count the rows without
idempotency keys twice.

Export: generators of CSV rows (header first) over `queryset.iterator()`, so a response streams
them with flat memory.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from metrics.models import BillableMetric, MetricValue
from usage.dirty import records_changed_announce
from usage.ingestion import content_hash_of, ingest_context_internal, records_store
from usage.models import CsvImport, CsvImportStatus, UsageEvent, UsageRecord
from usage.schema import datetime_format, record_validator, timestamp_bounds_problems, type_parse
from usage.selectors import records_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import Organisation
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.enqueue import enqueue_on_commit
from zenskar_site.lib.errors import Conflict, Forbidden, NotFound, ValidationFailed

logger = logging.getLogger(__name__)

CSV_MAX_BYTES = 50 * 1024 * 1024
BATCH_SIZE = 1000
ERRORS_KEPT = 50
SAMPLE_ROWS = 3
SAMPLE_CELL_CHARS = 200
EXPORT_CHUNK = 2000
VALUE_SHOWN_CHARS = 80
ROOT_TARGETS = ("customer_id", "timestamp", "idempotency_key")
DELIMITERS = (",", ";", "\t")
IMPORT_LABEL = "csv-import"

_INT_RE = re.compile(r"^[+-]?\d{1,25}\Z", re.ASCII)
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?\Z", re.ASCII)
_NUMBER_MAX_CHARS = 64
_ALIASES = {
    "customer": "customer_id",
    "customerid": "customer_id",
    "time": "timestamp",
    "ts": "timestamp",
    "key": "idempotency_key",
    "idempotencykey": "idempotency_key",
}


@dataclass
class CsvPreview:
    rows: int
    valid: int
    invalid: int
    duplicates: int  # valid rows that store nothing new: repeats in the file, or already stored
    errors: list[dict[str, Any]] = field(default_factory=list)


# --- reading the file ---


def _text_stream(content: bytes) -> io.TextIOWrapper:
    # Decoded as it is read, so a 50 MiB file is never held as one 50-million-character string.
    return io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", newline="")


def _blank(cells: list[str]) -> bool:
    return all(cell == "" for cell in cells)


def _data_rows(csv_import: CsvImport) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of every data row that is not blank: the header is row 1, as in a spreadsheet."""
    reader = csv.reader(_text_stream(bytes(csv_import.content)), delimiter=csv_import.delimiter)
    next(reader, None)
    for number, cells in enumerate(reader, start=2):
        if not _blank(cells):
            yield number, cells


def _encoding_error(content: bytes) -> ValidationFailed:
    start = len(codecs.BOM_UTF8) if content.startswith(codecs.BOM_UTF8) else 0
    try:
        content[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        before = content[start:offset].decode("utf-8")
        # The row the bad byte is in: complete rows before it, plus the one it starts or continues.
        row = sum(1 for _ in csv.reader(io.StringIO(before, newline="")))
        if not before or before.endswith(("\n", "\r")):
            row += 1
        return ValidationFailed(
            {
                "file": [
                    f"Row {row}: the file is not UTF-8 (byte 0x{content[offset]:02X} at byte offset {offset}). "
                    "Save it as UTF-8 (“CSV UTF-8” in Excel) and upload it again."
                ]
            }
        )
    return ValidationFailed({"file": ["The file is not UTF-8 text."]})


def _delimiter_of(content: bytes) -> str:
    first_line = content[:65536].split(b"\n", 1)[0].decode("utf-8", errors="replace")
    counts = {delimiter: first_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


@dataclass
class _Inspection:
    delimiter: str
    columns: list[str]
    rows: int
    sample: list[list[str]]


def _inspect(content: bytes) -> _Inspection:
    """Read the whole file once: UTF-8, well-formed CSV, a header of unique names; count the data rows."""
    delimiter = _delimiter_of(content)
    reader = csv.reader(_text_stream(content), delimiter=delimiter)
    header: list[str] | None = None
    number = rows = 0  # the row being read: a csv.Error names it
    sample: list[list[str]] = []
    try:
        for cells in reader:
            number += 1
            if number == 1:
                header = cells
            elif not _blank(cells):
                rows += 1
                if len(sample) < SAMPLE_ROWS:
                    sample.append([cell[:SAMPLE_CELL_CHARS] for cell in cells])
    except UnicodeDecodeError:
        raise _encoding_error(content)
    except csv.Error as exc:
        raise ValidationFailed({"file": [f"Row {number + 1}: not valid CSV ({exc})."]})
    if header is None or _blank(header):
        raise ValidationFailed({"file": ["Row 1 must be a header row naming the columns; it is empty."]})
    columns = [name.strip() for name in header]
    problems = []
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if not name:
            problems.append(f"Row 1: column {position} has no name; name every column in the header row.")
        elif name in seen:
            problems.append(f"Row 1: the column name {name!r} is used twice (columns {seen[name]} and {position}).")
        else:
            seen[name] = position
    if problems:
        raise ValidationFailed({"file": problems})
    return _Inspection(delimiter=delimiter, columns=columns, rows=rows, sample=sample)


# --- mapping columns to fields ---


def mapping_targets(usage_event: UsageEvent) -> list[tuple[str, str]]:
    """What a CSV column can be mapped to: (target, label), the root columns first."""
    targets = [
        ("customer_id", "customer_id (String, required)"),
        ("timestamp", "timestamp (DateTime64, required)"),
        ("idempotency_key", "idempotency_key (String, optional)"),
    ]
    for name, type_text in usage_event.dataschema.get("data", {}).items():
        optional = "optional" if type_parse(type_text).nullable else "required"
        targets.append((f"data.{name}", f"{name} ({type_parse(type_text).base}, {optional})"))
    return targets


def _normalized(name: str) -> str:
    text = re.sub(r"[\s\-.]+", "_", name.strip().lower())
    return text.removeprefix("data_")


def mapping_propose(*, columns: list[str], usage_event: UsageEvent) -> dict[str, str]:
    """Match column names to fields (case, spaces and a `data.` prefix ignored); unmatched columns are ignored."""
    by_name = {target.removeprefix("data."): target for target, _ in mapping_targets(usage_event)}
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for column in columns:
        name = _normalized(column)
        target = by_name.get(name) or by_name.get(_ALIASES.get(name.replace("_", ""), ""), "")
        if target and target not in taken:
            mapping[column] = target
            taken.add(target)
        else:
            mapping[column] = ""
    return mapping


def _cell_int(text: str) -> Any:
    stripped = text.strip()
    if _INT_RE.match(stripped):
        return int(stripped)
    if len(stripped) <= _NUMBER_MAX_CHARS and _NUMBER_RE.match(stripped):
        return Decimal(stripped)  # the validator takes 5.0 as 5 and names a fraction, as for JSON
    return text


def _cell_float(text: str) -> Any:
    stripped = text.strip()
    if len(stripped) <= _NUMBER_MAX_CHARS and _NUMBER_RE.match(stripped):
        return float(stripped)
    return text


def _cell_bool(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return text


CELL_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "Int64": _cell_int,
    "Float64": _cell_float,
    "Decimal": str.strip,  # kept as text: the validator reads it exactly
    "Bool": _cell_bool,
}
_STRIPPED_TYPES = frozenset(CELL_CONVERTERS)


@dataclass
class _Plan:
    """A mapping compiled against a usage event's schema: which cell goes where, converted how."""

    roots: list[tuple[int, str]]
    data: list[tuple[int, str, Callable[[str], Any] | None, bool]]
    column_of: dict[str, str]  # an error path ("customer_id", "data.x") -> the CSV column mapped to it
    missing: dict[str, str]  # an error path -> the message for the header row

    def item(self, cells: list[str]) -> dict[str, Any]:
        """One row as the JSON-like record the ingestion validator reads; an empty cell is absent."""
        width = len(cells)
        item: dict[str, Any] = {}
        for index, target in self.roots:
            text = cells[index] if index < width else ""
            if text != "":
                item[target] = text
        data: dict[str, Any] = {}
        for index, name, convert, strip in self.data:
            text = cells[index] if index < width else ""
            if (text.strip() if strip else text) == "":
                continue
            data[name] = convert(text) if convert is not None else text
        item["data"] = data
        return item


def _plan(*, columns: list[str], mapping: dict[str, str], usage_event: UsageEvent) -> _Plan:
    """Check a mapping (unknown columns or targets, a target used twice are refused) and compile it."""
    schema = usage_event.dataschema.get("data", {})
    known_targets = {target for target, _ in mapping_targets(usage_event)}
    problems: dict[str, list[str]] = {}
    used: dict[str, str] = {}
    for column, target in mapping.items():
        if column not in columns:
            problems.setdefault("mapping", []).append(f"The file has no column named {column!r}.")
        elif target and target not in known_targets:
            problems.setdefault(f"mapping.{column}", []).append(
                f"{target!r} is not a field of {usage_event.api_slug!r}; map it to customer_id, timestamp, "
                "idempotency_key, data.<field>, or nothing."
            )
        elif target and target in used:
            problems.setdefault(f"mapping.{column}", []).append(
                f"{target} is already mapped from the column {used[target]!r}; map each field from one column."
            )
        elif target:
            used[target] = column
    if problems:
        raise ValidationFailed(problems)
    position = {name: index for index, name in enumerate(columns)}
    roots = [(position[used[target]], target) for target in ROOT_TARGETS if target in used]
    data = []
    missing: dict[str, str] = {}
    for root in ("customer_id", "timestamp"):
        if root not in used:
            missing[root] = f"Missing column for {root}: map a CSV column to it."
    for name, type_text in schema.items():
        field_type = type_parse(type_text)
        target = f"data.{name}"
        if target in used:
            data.append(
                (
                    position[used[target]],
                    name,
                    CELL_CONVERTERS.get(field_type.base),
                    field_type.base in _STRIPPED_TYPES,
                )
            )
        elif not field_type.nullable:
            missing[target] = f"Missing column for {name}: the field is required; map a CSV column to it."
    return _Plan(roots=roots, data=data, column_of=dict(used), missing=missing)


# --- errors ---


def _clip(text: str) -> str:
    return text if len(text) <= VALUE_SHOWN_CHARS else text[: VALUE_SHOWN_CHARS - 1] + "…"


class _Errors:
    """The first ERRORS_KEPT errors by row number (rows can be found bad out of order)."""

    def __init__(self, initial: list[dict[str, Any]] | None = None) -> None:
        self.kept: list[dict[str, Any]] = list(initial or [])

    def add(self, *, row: int, column: str, field: str, value: str, message: str) -> None:
        self.kept.append({"row": row, "column": column, "field": field, "value": _clip(value), "message": message})
        if len(self.kept) > ERRORS_KEPT:
            self.kept.sort(key=_by_row)
            del self.kept[ERRORS_KEPT:]

    def add_record_errors(
        self, *, row: int, cells: list[str], plan: _Plan, columns: list[str], errors: dict[str, list[str]]
    ) -> None:
        for path, messages in errors.items():
            column = plan.column_of.get(path, "")
            index = columns.index(column) if column else -1
            value = cells[index] if 0 <= index < len(cells) else ""
            for message in messages:
                self.add(row=row, column=column, field=path, value=value, message=message)

    def sorted(self) -> list[dict[str, Any]]:
        return sorted(self.kept, key=_by_row)


def _by_row(error: dict[str, Any]) -> int:
    return error["row"] if error["row"] is not None else 0  # a whole-import problem comes first


# --- selectors ---


def csv_import_get(*, organisation: Organisation, import_id: int, with_content: bool = False) -> CsvImport:
    imports = CsvImport.objects.select_related("usage_event").filter(organisation=organisation, id=import_id)
    if not with_content:
        imports = imports.defer("content")
    found = imports.first()
    if found is None:
        raise NotFound(f"No CSV import {import_id} in this organisation.")
    return found


def csv_imports_recent(*, organisation: Organisation, limit: int = 20) -> list[CsvImport]:
    return list(
        CsvImport.objects.select_related("usage_event", "created_by")
        .filter(organisation=organisation)
        .defer("content", "sample", "errors")
        .order_by("-id")[:limit]
    )


# --- services ---


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
    found = _inspect(content)
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
    # Every column gets a target ("" ignores it); a column the file lacks stays in, for _plan to refuse.
    mapping = {column: mapping.get(column) or "" for column in csv_import.columns} | {
        column: target for column, target in mapping.items() if column not in csv_import.columns
    }
    plan = _plan(columns=csv_import.columns, mapping=mapping, usage_event=usage_event)
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


def _validate_rows(*, csv_import: CsvImport, plan: _Plan, now: dt.datetime) -> CsvPreview:
    usage_event = csv_import.usage_event
    columns = csv_import.columns
    validate = record_validator(usage_event.dataschema)
    errors = _Errors()
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
                errors.add(
                    row=row,
                    column=plan.column_of.get("idempotency_key", ""),
                    field="idempotency_key",
                    value=cell,
                    message=f"The idempotency key {key!r} is already stored (record {record_id}) with different "
                    "content; use a new key for a new record.",
                )
        unchecked.clear()

    for row, cells in _data_rows(csv_import):
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
            problems = timestamp_bounds_problems(record.timestamp, now=now, backfill=True) or problems
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
            errors.add(
                row=row,
                column=plan.column_of.get("idempotency_key", ""),
                field="idempotency_key",
                value=key,
                message=f"The idempotency key {key!r} is used on rows {first[0]} and {row} with different content.",
            )
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
        plan = _plan(columns=csv_import.columns, mapping=csv_import.mapping, usage_event=usage_event)
        context = ingest_context_internal(usage_event=usage_event, label=IMPORT_LABEL)
        errors = _Errors(csv_import.errors)
        items: list[dict[str, Any]] = []
        batch: list[tuple[int, list[str]]] = []
        for position, (row, cells) in enumerate(_data_rows(csv_import)):
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
    plan: _Plan,
    errors: _Errors,
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


# --- export ---


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _iso(moment: dt.datetime | None) -> str:
    return datetime_format(moment) if moment is not None else ""


def records_csv_rows(
    *,
    usage_event: UsageEvent,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    include_voided: bool = False,
) -> Iterator[list[str]]:
    """A usage event's records as CSV rows, header first, oldest id first; `start` inclusive, `end` exclusive."""
    fields = list(usage_event.dataschema.get("data", {}))
    yield ["id", "customer_id", "timestamp", *fields, "idempotency_key", "received_at", "voided", "superseded"]
    records = records_list(
        usage_event=usage_event, customer_id=customer_id, start=start, end=end, include_voided=include_voided
    )
    rows = records.order_by("id").values_list(
        "id", "customer_id", "timestamp", "data", "idempotency_key", "received_at", "voided", "superseded"
    )
    for record_id, customer, timestamp, data, key, received_at, voided, superseded in rows.iterator(
        chunk_size=EXPORT_CHUNK
    ):
        yield [
            str(record_id),
            customer,
            _iso(timestamp),
            *(_cell(data.get(name)) for name in fields),
            key or "",
            _iso(received_at),
            _cell(voided),
            _cell(superseded),
        ]


def metric_values_csv_rows(
    *,
    metric: BillableMetric,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> Iterator[list[str]]:
    """A metric's values as CSV rows, header first, by period; periods starting in [start, end)."""
    yield [
        "customer_id",
        "period_start",
        "period_end",
        "dimension",
        "computed_value",
        "override_value",
        "value",
        "metric_version",
    ]
    values: QuerySet[MetricValue] = MetricValue.objects.filter(metric=metric)
    if customer_id:
        values = values.filter(customer_id=customer_id)
    if start is not None:
        values = values.filter(period_start__gte=start)
    if end is not None:
        values = values.filter(period_start__lt=end)
    rows = values.order_by("period_start", "customer_id", "dimension_key", "id").values_list(
        "customer_id", "period_start", "period_end", "dimension", "computed_value", "override_value", "metric_version"
    )
    for customer, period_start, period_end, dimension, computed, override, version in rows.iterator(
        chunk_size=EXPORT_CHUNK
    ):
        yield [
            customer,
            _iso(period_start),
            _iso(period_end),
            _cell(dimension),
            computed or "",
            override or "",
            (override if override is not None else computed) or "",
            str(version),
        ]
