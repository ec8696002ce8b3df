"""Storing new records: validate each item, then write the batch with ingestion's one statement.

The answer is built only after the write: on PostgreSQL an event request is one statement in
autocommit, anything else one transaction, so a 2xx means the accepted records are durable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Q

from usage.dirty import dirty_hours, hours_mark_dirty
from usage.ingestion.context import IngestContext, IngestError, StaleContext
from usage.ingestion.errorlog import error_rows, errors_log
from usage.ingestion.statements import (
    IDEMPOTENCY_CONSTRAINT,
    PostgresWrite,
    RecordRow,
    RecordsWrite,
    postgres_write_one_params,
    postgres_write_one_sql,
    postgres_write_params,
    postgres_write_sql,
    sqlite_insert_params,
    sqlite_insert_sql,
)
from usage.models import UsageEvent, UsageEventKind, UsageRecord
from usage.schema import (
    RecordValidator,
    TimestampBounds,
    ValidRecord,
    dataschema_has_decimal,
    record_validator,
    timestamp_bounds,
)
from zenskar_site.accounts.models import ApiKeyScope
from zenskar_site.lib.periods import period_floor
from zenskar_site.lib.sql import hot_rows, on_postgres

# An entry of the response's `results`, built once: {"index", "status", "id"} or {"index", "status", "errors"}.
Entry = dict[str, Any]


@dataclass
class _Batch:
    """A request's items sorted out before the write. `rows` are what the write stores: every unkeyed
    record and the first record of each idempotency key, in item order, `indexes` their item indexes.
    A later record with an earlier row's key is a repeat: it gets that row's answer (or a rejection)."""

    rows: list[RecordRow] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    rejected: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # by item index: invalid, out of bounds
    repeats: list[tuple[int, int, str]] = field(default_factory=list)  # (item index, row position, content hash)


@dataclass
class IngestResult:
    results: list[Entry]
    accepted: int
    duplicates: int
    rejected: int
    usage_event_id: int

    @property
    def status_code(self) -> int:
        return 202 if self.accepted or self.duplicates else 422

    def body(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "results": self.results,
        }


def body_parse(*, body: bytes, exact_decimals: bool) -> list[Any] | dict[str, Any]:
    try:
        if exact_decimals:
            # Keeps 0.1 as Decimal("0.1"): a Decimal field must not pass through a float.
            parsed = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
        else:
            parsed = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IngestError(400, f"Malformed JSON: {exc}") from None
    if isinstance(parsed, dict):
        return parsed
    if isinstance(parsed, list):
        if not parsed:
            raise IngestError(400, "The batch is empty: send one record or an array of 1 or more records.")
        if len(parsed) > settings.INGEST_MAX_BATCH:
            raise IngestError(413, f"A batch holds at most {settings.INGEST_MAX_BATCH} records; got {len(parsed)}.")
        return parsed
    raise IngestError(400, "The body must be a record object or a JSON array of records.")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# orjson writes an aware datetime in UTC as isoformat() does, with Z for +00:00 (OPT_UTC_Z): the bytes of
# datetime_format's text, which stored hashes were made from, without building the text first.
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def content_hash_of(record: ValidRecord) -> str:
    """SHA-256 of [customer_id, timestamp in UTC (datetime_format's text), data with sorted keys] as JSON."""
    canonical = orjson.dumps([record.customer_id, record.timestamp.astimezone(dt.UTC), record.data], option=_CANONICAL)
    return hashlib.sha256(canonical).hexdigest()


# Usage event id -> when a request of it in this process last met an idempotency key already taken.
_key_taken_at: dict[int, float] = {}
# For this long after, its requests skip taken keys from the start (a client replaying batches).
KEY_TAKEN_MEMORY_SECONDS = 60.0


def _records_insert(write: PostgresWrite, sql_of: Callable[[bool], str], params: list[Any]) -> list[tuple[Any, ...]]:
    """Run the write statement, first as a plain INSERT when that can pay off, else skipping taken keys.

    PostgreSQL checks a plain insert's unique index for less than it costs to arbitrate ON CONFLICT row by
    row (a sixth of the server's time per record of a batch, measured with bench/ingest.py's records), and
    a taken key is rare: a client's retry. A plain insert that meets one fails as a whole, writing nothing
    (one statement in autocommit), and the statement runs again, skipping the taken keys. Only in
    autocommit (a failed statement would abort an open transaction), and not for keyed records of a
    usage event whose requests met a taken key lately (records without a key can never conflict).
    """
    usage_event_id = write.records.usage_event_id
    plain = not connections[DEFAULT_DB_ALIAS].in_atomic_block and (
        time.monotonic() - _key_taken_at.get(usage_event_id, -1e9) > KEY_TAKEN_MEMORY_SECONDS
        or all(row.idempotency_key is None for row in write.records.rows)
    )
    if plain:
        try:
            return hot_rows(sql_of(False), params)
        except IntegrityError as exc:
            if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) != IDEMPOTENCY_CONSTRAINT:
                raise
            _key_taken_at[usage_event_id] = time.monotonic()
    return hot_rows(sql_of(True), params)


def postgres_write_many(write: PostgresWrite) -> list[tuple[int, str | None]]:
    """The batch statement: (id, idempotency_key) of the stored records in order; StaleContext if the guard failed."""
    guarded, with_errors = write.guard is not None, bool(write.error_rows)
    rows_back = _records_insert(
        write,
        lambda skip: postgres_write_sql(guarded=guarded, with_errors=with_errors, skip_taken_keys=skip),
        postgres_write_params(write),
    )
    if not rows_back[0][1]:
        raise StaleContext()
    return [(int(r[1]), r[2]) for r in rows_back[1:]]


def postgres_write_one(write: PostgresWrite) -> list[tuple[int, str | None]]:
    """The single-record statement, answering as postgres_write_many does for the same input."""
    guarded = write.guard is not None
    rows_back = _records_insert(
        write,
        lambda skip: postgres_write_one_sql(guarded=guarded, skip_taken_keys=skip),
        postgres_write_one_params(write),
    )
    if rows_back:
        return [(int(rows_back[0][0]), rows_back[0][1])]
    if write.guard is not None or write.records.rows[0].idempotency_key is None:
        # Nothing written, and the statement cannot say whether the guard failed or the key is taken:
        # the caller answers from the database's state (a fresh context, then this path without a guard).
        raise StaleContext()
    return []  # the key is taken: the caller finds the record that holds it


def _resolve_inserted(
    *, usage_event_id: int, rows: list[RecordRow], entries: list[Entry], inserted: list[tuple[int, str | None]]
) -> None:
    """Answer each row (written in this order): accepted with its id, or, if the insert skipped it (its key
    was taken), a duplicate of the stored record with the same content or rejected (other content)."""
    if len(inserted) == len(rows):  # every row was stored (ids in the order written)
        for entry, (record_id, _) in zip(entries, inserted, strict=True):
            entry["status"], entry["id"] = "accepted", record_id
        return
    position = 0
    conflicted: list[tuple[RecordRow, Entry]] = []
    for row, entry in zip(rows, entries, strict=True):
        if position < len(inserted) and (row.idempotency_key is None or inserted[position][1] == row.idempotency_key):
            entry["status"], entry["id"] = "accepted", inserted[position][0]
            position += 1
        else:
            conflicted.append((row, entry))
    existing = {
        key: (record_id, content_hash)
        for key, record_id, content_hash in UsageRecord.objects.filter(
            usage_event_id=usage_event_id, idempotency_key__in=[row.idempotency_key for row, _ in conflicted]
        ).values_list("idempotency_key", "id", "content_hash")
    }
    for row, entry in conflicted:
        found = existing.get(row.idempotency_key)
        if found is None:  # the conflicting row vanished (its writer rolled back): let the client retry
            raise IngestError(503, "A concurrent request with the same idempotency key did not finish; retry.")
        record_id, content_hash = found
        if content_hash == row.content_hash:
            entry["status"], entry["id"] = "duplicate", record_id
        else:
            entry["status"], entry["errors"] = (
                "rejected",
                {
                    "idempotency_key": [
                        f"The idempotency key {row.idempotency_key!r} was already used for record "
                        f"{record_id} with different content; use a new key for a new record."
                    ]
                },
            )


def _supersede(*, usage_event_id: int, rows: list[RecordRow], entries: list[Entry]) -> list[dt.datetime]:
    """Make the newest accepted value of each (customer, period) current; earlier ones stay as history.

    `rows` in item order. Returns the timestamps of the records that stopped counting, whose hours the
    metrics must revisit.
    """
    newest: dict[tuple[str, dt.datetime], int] = {}
    for row, entry in zip(rows, entries, strict=True):
        if entry["status"] == "accepted" and row.period_start is not None:
            newest[(row.customer_id, row.period_start)] = entry["id"]
    if not newest:
        return []
    current = UsageRecord.objects.filter(usage_event_id=usage_event_id, superseded=False, period_start__isnull=False)
    pairs = Q()
    for customer_id, period_start in newest:
        pairs |= Q(customer_id=customer_id, period_start=period_start)
    # The usage event's row lock (taken by the caller) keeps this read and the update consistent.
    replaced = list(current.filter(pairs).values_list("id", "timestamp"))
    if replaced:
        UsageRecord.objects.filter(id__in=[record_id for record_id, _ in replaced]).update(superseded=True)
    UsageRecord.objects.filter(id__in=list(newest.values())).update(superseded=False)
    return [moment for _, moment in replaced]


def records_ingest(
    *,
    context: IngestContext,
    body: bytes,
    backfill: bool,
    now: dt.datetime,
) -> IngestResult:
    """Validate and store one request's records; every record gets its own outcome."""
    if backfill and context.api_key.scope != ApiKeyScope.FULL:
        raise IngestError(403, "backfill=true needs a full-scope API key.")
    parsed = body_parse(body=body, exact_decimals=dataschema_has_decimal(context.usage_event.dataschema))
    items = parsed if isinstance(parsed, list) else [parsed]
    return records_store(context=context, items=items, backfill=backfill, now=now)


def records_store(*, context: IngestContext, items: list[Any], backfill: bool, now: dt.datetime) -> IngestResult:
    """The one write path for new records (the endpoint and CSV imports): validate each item with the
    usage event's compiled validator, then store the batch with ingestion's one statement."""
    usage_event, api_key = context.usage_event, context.api_key
    aggregate = usage_event.kind == UsageEventKind.AGGREGATE
    batch = _batch_sort(
        items,
        validate=record_validator(usage_event.dataschema),
        bounds=timestamp_bounds(now=now, backfill=backfill),
        period=(usage_event.aggregate_period or "") if aggregate else None,
    )
    entries: list[Entry] = [{"index": index, "status": "pending"} for index in batch.indexes]
    rejected = [(items[index], errors) for index, errors in batch.rejected.items()]
    # An event request on PostgreSQL is one statement in autocommit; anything else is one transaction.
    with transaction.atomic() if aggregate or not on_postgres() else nullcontext():
        if aggregate and batch.rows:
            # Serialises aggregate writers per usage event, so "latest received wins" is well defined.
            UsageEvent.objects.select_for_update().filter(id=usage_event.id).values_list("id").first()
        # Keyed records in one order (by key: the same in every request), so concurrent batches that share
        # keys take the unique index's locks in the same order and never deadlock; unkeyed ones after them.
        order = _lock_order(batch.rows)
        rows = [batch.rows[position] for position in order]
        inserted = _write(
            usage_event_id=usage_event.id,
            rows=rows,
            received_at=now,
            aggregate=aggregate,
            rejected=rejected,
            api_key_prefix=api_key.prefix,
            guard=(api_key.id, usage_event.updated_at) if context.cached else None,
        )
        _resolve_inserted(
            usage_event_id=usage_event.id, rows=rows, entries=[entries[p] for p in order], inserted=inserted
        )
        if aggregate:
            hours_mark_dirty(
                usage_event_id=usage_event.id,
                moments=_supersede(usage_event_id=usage_event.id, rows=batch.rows, entries=entries),
            )
        results = _results(batch, entries, item_count=len(items))
        reused = [
            (items[entry["index"]], entry["errors"])
            for entry in results
            if entry["status"] == "rejected" and entry["index"] not in batch.rejected
        ]
        if reused:  # keys found taken only after the insert: logged in a second write
            errors_log(usage_event_id=usage_event.id, errors_to_log=reused, now=now, api_key_prefix=api_key.prefix)
    return _result(usage_event_id=usage_event.id, results=results, rejected=len(rejected) + len(reused))


def _batch_sort(items: list[Any], *, validate: RecordValidator, bounds: TimestampBounds, period: str | None) -> _Batch:
    """Validate every item and sort the request out (see _Batch). `period` is an aggregate's period, else None.

    This loop runs for every record of every request: it builds one row per record and nothing more.
    """
    batch = _Batch()
    rows, indexes = batch.rows, batch.indexes
    admits = bounds.admits
    row_of_key: dict[str, int] = {}
    for index, item in enumerate(items):
        record, errors = validate(item)
        if record is None:
            batch.rejected[index] = errors
            continue
        timestamp, key = record.timestamp, record.idempotency_key
        if not admits(timestamp):
            batch.rejected[index] = bounds.problems(timestamp)
            continue
        content_hash = content_hash_of(record)
        if key is not None:
            position = row_of_key.setdefault(key, len(rows))
            if position != len(rows):
                batch.repeats.append((index, position, content_hash))
                continue
        rows.append(_row(record, content_hash=content_hash, period=period))
        indexes.append(index)
    return batch


def _row(record: ValidRecord, *, content_hash: str, period: str | None) -> RecordRow:
    customer_id, timestamp, data, key = record
    period_start = None if period is None else period_floor(timestamp, period)
    return RecordRow(customer_id, timestamp, period_start, orjson.dumps(data).decode(), key, content_hash)


def record_row_plain(*, context: IngestContext, item: Any, now: dt.datetime) -> RecordRow | None:
    """The row of `item` when it is the plain case of a single event record: valid, within the bounds of a
    request that is no backfill, and a context from the cache (so PostgreSQL, where record_store_plain's
    one statement in autocommit writes it all). None for anything else, which records_ingest answers."""
    if not context.cached or context.usage_event.kind != UsageEventKind.EVENT:
        return None
    record, _ = record_validator(context.usage_event.dataschema)(item)
    if record is None or not timestamp_bounds(now=now, backfill=False).admits(record.timestamp):
        return None
    return _row(record, content_hash=content_hash_of(record), period=None)


def record_store_plain(*, context: IngestContext, row: RecordRow, now: dt.datetime) -> IngestResult:
    """Store record_row_plain's row as records_store would, accepted; StaleContext when the statement wrote
    nothing (the cached context is stale, or the idempotency key is taken): records_ingest then answers."""
    usage_event, api_key = context.usage_event, context.api_key
    inserted = _write(
        usage_event_id=usage_event.id,
        rows=[row],
        received_at=now,
        aggregate=False,
        rejected=[],
        api_key_prefix=api_key.prefix,
        guard=(api_key.id, usage_event.updated_at),  # a cached context: the database checks it is current
    )
    if not inserted:
        raise StaleContext()
    results = [{"index": 0, "status": "accepted", "id": inserted[0][0]}]
    return IngestResult(results=results, accepted=1, duplicates=0, rejected=0, usage_event_id=usage_event.id)


def _lock_order(rows: list[RecordRow]) -> list[int]:
    """The positions of `rows` in the order the write takes them: keyed ones by key (keys are unique among
    the rows), then unkeyed ones as they came."""
    keys = {position: row.idempotency_key for position, row in enumerate(rows) if row.idempotency_key is not None}
    keyed = sorted(keys, key=keys.__getitem__)
    if len(keyed) == len(rows):
        return keyed
    return keyed + [position for position in range(len(rows)) if position not in keys]


def _write(
    *,
    usage_event_id: int,
    rows: list[RecordRow],
    received_at: dt.datetime,
    aggregate: bool,
    rejected: list[tuple[Any, dict[str, list[str]]]],
    api_key_prefix: str,
    guard: tuple[int, dt.datetime] | None,
) -> list[tuple[int, str | None]]:
    """Records, error-log rows and dirty-hour marks; returns (id, idempotency_key) of the stored records in order.

    Ids come from one sequence in the order the rows were inserted, so the order is the batch's.
    """
    records = RecordsWrite(
        usage_event_id=usage_event_id,
        received_at=received_at,
        superseded=aggregate,  # aggregates go in superseded; _supersede then makes the newest current
        rows=rows,
    )
    if on_postgres():
        write = PostgresWrite(
            records=records,
            error_rows=error_rows(rejected),
            api_key_prefix=api_key_prefix,
            # A duplicate's hour marked too only costs a recompute.
            dirty_hours=dirty_hours(row.timestamp for row in rows),
            guard=guard,
        )
        if len(rows) == 1 and not write.error_rows:
            return postgres_write_one(write)
        return postgres_write_many(write)
    inserted: list[tuple[int, str | None]] = []
    if rows:
        params = sqlite_insert_params(records, adapt=connection.ops.adapt_datetimefield_value)
        inserted = [(int(r[0]), r[1]) for r in hot_rows(sqlite_insert_sql(rows=len(rows)), params)]
    if inserted:
        hours_mark_dirty(usage_event_id=usage_event_id, moments=[row.timestamp for row in rows])
    if rejected:
        errors_log(
            usage_event_id=usage_event_id, errors_to_log=rejected, now=received_at, api_key_prefix=api_key_prefix
        )
    return inserted


def _results(batch: _Batch, entries: list[Entry], *, item_count: int) -> list[Entry]:
    """Every item's entry in item order: the rows' (answered by the write), the rejected items', the repeats'."""
    results: list[Entry | None] = [None] * item_count
    for entry in entries:
        results[entry["index"]] = entry
    for index, errors in batch.rejected.items():
        results[index] = {"index": index, "status": "rejected", "errors": errors}
    for index, position, content_hash in batch.repeats:
        first, entry = batch.rows[position], entries[position]
        results[index] = _repeat_entry(index, first=first, entry=entry, content_hash=content_hash)
    return results  # type: ignore[return-value]  # every index is one of the three


def _repeat_entry(index: int, *, first: RecordRow, entry: Entry, content_hash: str) -> Entry:
    """A later record of the batch reusing an earlier one's key: the same content is a duplicate of it."""
    if first.content_hash != content_hash:
        errors = {
            "idempotency_key": [
                f"The idempotency key {first.idempotency_key!r} was already used earlier in this "
                f"batch (index {entry['index']}) with different content."
            ]
        }
        return {"index": index, "status": "rejected", "errors": errors}
    if entry["status"] == "rejected":
        return {"index": index, "status": "rejected", "errors": entry["errors"]}
    return {"index": index, "status": "duplicate", "id": entry["id"]}


def _result(*, usage_event_id: int, results: list[Entry], rejected: int) -> IngestResult:
    duplicates = sum(1 for entry in results if entry["status"] == "duplicate")
    return IngestResult(
        results=results,
        accepted=len(results) - duplicates - rejected,
        duplicates=duplicates,
        rejected=rejected,
        usage_event_id=usage_event_id,
    )
