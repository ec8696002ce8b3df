"""Storing new records: validate each item, then write the batch with ingestion's one statement.

The answer is built only after the write: on PostgreSQL an event request is one statement in
autocommit, anything else one transaction, so a 2xx means the accepted records are durable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from usage.dirty import dirty_hours, hours_mark_dirty
from usage.ingestion.context import IngestContext, IngestError, StaleContext
from usage.ingestion.errorlog import error_rows, errors_log
from usage.ingestion.statements import (
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
    ValidRecord,
    dataschema_has_decimal,
    datetime_format,
    record_validator,
    timestamp_bounds,
)
from zenskar_site.accounts.models import ApiKeyScope
from zenskar_site.lib.periods import period_floor
from zenskar_site.lib.sql import hot_rows, on_postgres


@dataclass
class Candidate:
    index: int
    record: ValidRecord
    content_hash: str
    period_start: dt.datetime | None
    status: str = "pending"
    id: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    same_as: Candidate | None = None  # an earlier record of this batch with the same idempotency key


@dataclass
class IngestResult:
    results: list[dict[str, Any]]
    accepted: int
    duplicates: int
    rejected: int
    usage_event_id: int
    touched: list[tuple[str, dt.datetime]]  # (customer_id, timestamp) of every accepted record

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


def content_hash_of(record: ValidRecord) -> str:
    canonical = orjson.dumps(
        [record.customer_id, datetime_format(record.timestamp), record.data], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


def postgres_write_many(write: PostgresWrite) -> list[tuple[int, str | None]]:
    """The batch statement: (id, idempotency_key) of the stored records in order; StaleContext if the guard failed."""
    rows_back = hot_rows(
        postgres_write_sql(guarded=write.guard is not None, with_errors=bool(write.error_rows)),
        postgres_write_params(write),
    )
    if not rows_back[0][1]:
        raise StaleContext()
    return [(int(r[1]), r[2]) for r in rows_back[1:]]


def postgres_write_one(write: PostgresWrite) -> list[tuple[int, str | None]]:
    """The single-record statement, answering as postgres_write_many does for the same input."""
    rows_back = hot_rows(postgres_write_one_sql(guarded=write.guard is not None), postgres_write_one_params(write))
    if rows_back:
        return [(int(rows_back[0][0]), rows_back[0][1])]
    if write.guard is not None or write.records.rows[0].idempotency_key is None:
        # Nothing written, and the statement cannot say whether the guard failed or the key is taken:
        # the caller answers from the database's state (a fresh context, then this path without a guard).
        raise StaleContext()
    return []  # the key is taken: the caller finds the record that holds it


def _resolve_inserted(*, usage_event_id: int, rows: list[Candidate], inserted: list[tuple[int, str | None]]) -> None:
    """Mark each row accepted (with its id), duplicate or rejected (its key is taken by other content)."""
    position = 0
    conflicted: list[Candidate] = []
    for candidate in rows:
        if position < len(inserted) and (
            candidate.record.idempotency_key is None or inserted[position][1] == candidate.record.idempotency_key
        ):
            candidate.status, candidate.id = "accepted", inserted[position][0]
            position += 1
        else:
            conflicted.append(candidate)
    if not conflicted:
        return
    existing = {
        key: (record_id, content_hash)
        for key, record_id, content_hash in UsageRecord.objects.filter(
            usage_event_id=usage_event_id, idempotency_key__in=[c.record.idempotency_key for c in conflicted]
        ).values_list("idempotency_key", "id", "content_hash")
    }
    for candidate in conflicted:
        found = existing.get(candidate.record.idempotency_key)
        if found is None:  # the conflicting row vanished (its writer rolled back): let the client retry
            raise IngestError(503, "A concurrent request with the same idempotency key did not finish; retry.")
        record_id, content_hash = found
        if content_hash == candidate.content_hash:
            candidate.status, candidate.id = "duplicate", record_id
        else:
            candidate.status = "rejected"
            candidate.errors = {
                "idempotency_key": [
                    f"The idempotency key {candidate.record.idempotency_key!r} was already used for record "
                    f"{record_id} with different content; use a new key for a new record."
                ]
            }


def _supersede(*, usage_event_id: int, rows: list[Candidate]) -> list[dt.datetime]:
    """Make the newest accepted value of each (customer, period) current; earlier ones stay as history.

    Returns the timestamps of the records that stopped counting, whose hours the metrics must revisit.
    """
    newest: dict[tuple[str, dt.datetime], Candidate] = {}
    for candidate in rows:
        if candidate.status == "accepted" and candidate.period_start is not None:
            newest[(candidate.record.customer_id, candidate.period_start)] = candidate
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
    UsageRecord.objects.filter(id__in=[c.id for c in newest.values()]).update(superseded=False)
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
    validate = record_validator(usage_event.dataschema)
    aggregate = usage_event.kind == UsageEventKind.AGGREGATE
    period = usage_event.aggregate_period or ""
    bounds = timestamp_bounds(now=now, backfill=backfill)

    outcomes: list[Candidate | dict[str, list[str]]] = []
    first_by_key: dict[str, Candidate] = {}
    to_insert: list[Candidate] = []
    for index, item in enumerate(items):
        record, errors = validate(item)
        if record is None:
            outcomes.append(errors)
            continue
        out_of_bounds = bounds.problems(record.timestamp)
        if out_of_bounds:
            outcomes.append(out_of_bounds)
            continue
        candidate = Candidate(
            index=index,
            record=record,
            content_hash=content_hash_of(record),
            period_start=period_floor(record.timestamp, period) if aggregate else None,
        )
        key = record.idempotency_key
        if key is not None and key in first_by_key:
            candidate.same_as = first_by_key[key]
        else:
            if key is not None:
                first_by_key[key] = candidate
            to_insert.append(candidate)
        outcomes.append(candidate)

    rejected = [(items[i], o) for i, o in enumerate(outcomes) if isinstance(o, dict)]
    # An event request on PostgreSQL is one statement in autocommit; anything else is one transaction.
    with transaction.atomic() if aggregate or not on_postgres() else nullcontext():
        if aggregate and to_insert:
            # Serialises aggregate writers per usage event, so "latest received wins" is well defined.
            UsageEvent.objects.select_for_update().filter(id=usage_event.id).values_list("id").first()
        # Keyed records in one order (by key: the same in every request), so concurrent batches that share
        # keys take the unique index's locks in the same order and never deadlock; unkeyed ones after them.
        write_order = sorted(to_insert, key=_lock_order)
        inserted = _write(
            usage_event_id=usage_event.id,
            rows=write_order,
            received_at=now,
            aggregate=aggregate,
            rejected=rejected,
            api_key_prefix=api_key.prefix,
            guard=(api_key.id, usage_event.updated_at) if context.cached else None,
        )
        _resolve_inserted(usage_event_id=usage_event.id, rows=write_order, inserted=inserted)
        if aggregate:
            hours_mark_dirty(
                usage_event_id=usage_event.id, moments=_supersede(usage_event_id=usage_event.id, rows=to_insert)
            )
        for outcome in outcomes:
            if isinstance(outcome, Candidate) and outcome.same_as is not None:
                _follow_first(outcome)
        reused = [(items[o.index], o.errors) for o in outcomes if isinstance(o, Candidate) and o.status == "rejected"]
        if reused:  # keys found taken only after the insert: logged in a second write
            errors_log(usage_event_id=usage_event.id, errors_to_log=reused, now=now, api_key_prefix=api_key.prefix)
    return _result(usage_event_id=usage_event.id, outcomes=outcomes)


def _lock_order(candidate: Candidate) -> tuple[bool, str, int]:
    key = candidate.record.idempotency_key
    return (key is None, key or "", candidate.index)


def _write(
    *,
    usage_event_id: int,
    rows: list[Candidate],
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
        rows=[
            RecordRow(
                customer_id=c.record.customer_id,
                timestamp=c.record.timestamp,
                period_start=c.period_start,
                data=orjson.dumps(c.record.data).decode(),
                idempotency_key=c.record.idempotency_key,
                content_hash=c.content_hash,
            )
            for c in rows
        ],
    )
    if on_postgres():
        write = PostgresWrite(
            records=records,
            error_rows=error_rows(rejected),
            api_key_prefix=api_key_prefix,
            # A duplicate's hour marked too only costs a recompute.
            dirty_hours=dirty_hours(c.record.timestamp for c in rows),
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
        hours_mark_dirty(usage_event_id=usage_event_id, moments=[c.record.timestamp for c in rows])
    if rejected:
        errors_log(
            usage_event_id=usage_event_id, errors_to_log=rejected, now=received_at, api_key_prefix=api_key_prefix
        )
    return inserted


def _result(*, usage_event_id: int, outcomes: list[Candidate | dict[str, list[str]]]) -> IngestResult:
    results: list[dict[str, Any]] = []
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    touched: list[tuple[str, dt.datetime]] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, dict):
            results.append({"index": index, "status": "rejected", "errors": outcome})
            counts["rejected"] += 1
        elif outcome.status == "rejected":
            results.append({"index": index, "status": "rejected", "errors": outcome.errors})
            counts["rejected"] += 1
        else:
            results.append({"index": index, "status": outcome.status, "id": outcome.id})
            counts[outcome.status] += 1
            if outcome.status == "accepted":
                touched.append((outcome.record.customer_id, outcome.record.timestamp))
    return IngestResult(
        results=results,
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        rejected=counts["rejected"],
        usage_event_id=usage_event_id,
        touched=touched,
    )


def _follow_first(candidate: Candidate) -> None:
    """A later record of the batch reusing an earlier one's key: the same content is a duplicate of it."""
    first = candidate.same_as
    assert first is not None
    if first.content_hash != candidate.content_hash:
        candidate.status = "rejected"
        candidate.errors = {
            "idempotency_key": [
                f"The idempotency key {candidate.record.idempotency_key!r} was already used earlier in this "
                f"batch (index {first.index}) with different content."
            ]
        }
    elif first.status == "rejected":
        candidate.status, candidate.errors = "rejected", first.errors
    else:
        candidate.status, candidate.id = "duplicate", first.id
