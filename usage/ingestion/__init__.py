"""The ingestion hot path: `POST /usage/{api_slug}` (SPEC §3).

One request is parsed once, validated with the usage event's compiled validator, and written with
one INSERT per table (ON CONFLICT on the idempotency key, so concurrent retries are safe). The
answer is sent only after the transaction commits: a 2xx means the accepted records are durable.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from usage.dirty import dirty_hours, hours_mark_dirty
from usage.models import DirtyBucket, IngestionError, UsageEvent, UsageEventKind, UsageRecord
from usage.schema import (
    ValidRecord,
    dataschema_has_decimal,
    datetime_format,
    record_validator,
    timestamp_bounds_problems,
)
from zenskar_site.accounts.models import ApiKey, ApiKeyScope
from zenskar_site.accounts.services import api_key_hash, api_key_split, api_key_touch
from zenskar_site.lib.errors import DomainError
from zenskar_site.lib.hotsql import Param, hot_rows
from zenskar_site.lib.periods import period_floor

ERROR_PAYLOAD_MAX_CHARS = 4096


class IngestError(DomainError):
    """A whole-request failure: maps to the status code SPEC §3 names for it."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.headers = headers or {}


@dataclass
class IngestContext:
    api_key: ApiKey
    usage_event: UsageEvent
    # Set when the context came from this process's cache: the write statement then re-checks, in the
    # database, that the key is still active and the definition unchanged (see _guard_sql).
    cached: bool = False


class StaleContext(Exception):
    """The cached key or usage event changed since it was cached; nothing was written."""


# (key prefix, api slug) -> context. Authentication still hashes the presented secret on every
# request; revocation, archiving and schema changes are caught by the guard in the write statement.
_context_cache: dict[tuple[str, str], IngestContext] = {}
CONTEXT_CACHE_SIZE = 1024


def ingest_context_forget(*, api_key_prefix: str, api_slug: str) -> None:
    _context_cache.pop((api_key_prefix, api_slug), None)


def _organisation_check(organisation_id: uuid.UUID, organisation_header: str | None) -> None:
    if organisation_header is not None:
        try:
            claimed = uuid.UUID(organisation_header.strip())
        except ValueError:
            raise IngestError(403, "The organisation header is not a valid organisation id.") from None
        if claimed != organisation_id:
            raise IngestError(403, "The organisation header does not match the API key's organisation.")


def ingest_context_cached(
    *, secret: str | None, api_slug: str, organisation_header: str | None
) -> IngestContext | None:
    """The cached context for this key and slug when the secret matches it (PostgreSQL only)."""
    if not secret or not _on_postgres():
        return None
    prefix = api_key_split(secret=secret)
    context = _context_cache.get((prefix or "", api_slug))
    if context is None or not hmac.compare_digest(context.api_key.key_hash, api_key_hash(secret=secret)):
        return None
    if context.usage_event.kind != UsageEventKind.EVENT:
        return None  # only the single-statement path carries the guard
    _organisation_check(context.api_key.organisation_id, organisation_header)
    return context


def ingest_context_internal(*, usage_event: UsageEvent, label: str) -> IngestContext:
    """A context for trusted internal writers (CSV import): full scope, `label` in the error log."""
    return IngestContext(
        api_key=ApiKey(organisation_id=usage_event.organisation_id, prefix=label[:16], scope=ApiKeyScope.FULL),
        usage_event=usage_event,
    )


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


# --- database access on the hot path ---


@functools.cache
def _on_postgres() -> bool:
    """The database vendor, asked once per process (it never changes; the connection proxy costs a lookup)."""
    return connection.vendor == "postgresql"


@contextmanager
def hot_cursor() -> Iterator[Any]:
    """A cursor for the hot path's fixed statements.

    On PostgreSQL: server-side binding with prepared statements (parameters sent in binary, the plan
    reused), instead of Django's client-side quoting of every array element. Errors are translated
    to Django's (so an outage is an OperationalError like anywhere else).
    """
    if not _on_postgres():
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    prepared = settings.DB_PREPARED_STATEMENTS
    if prepared and raw.prepare_threshold is None:
        # Django turns server-side prepared statements off for the connection (its ORM cursors bind
        # on the client and never prepare); the hot path's fixed statements are worth preparing.
        raw.prepare_threshold = 5
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        yield PreparedCursor(cursor, prepare=prepared)


class PreparedCursor:
    def __init__(self, cursor: Any, *, prepare: bool) -> None:
        self.cursor = cursor
        self.prepare = prepare

    def execute(self, sql: str, params: list[Any]) -> None:
        self.cursor.execute(sql, params, prepare=self.prepare or None)

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cursor.fetchall())


# --- authentication and lookup: one query for the key and the usage event ---

_CONTEXT_SQL = """
SELECT k.id, k.organisation_id, k.key_hash, k.scope, k.revoked_at, k.last_used_at,
       e.id, e.kind, e.aggregate_period, e.dataschema, e.archived, e.updated_at
FROM zenskar_site_apikey k
LEFT JOIN usage_usageevent e ON e.organisation_id = k.organisation_id AND e.api_slug = %s
WHERE k.prefix = %s
"""


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))  # SQLite stores UTC as naive text
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def ingest_context_load(*, secret: str | None, api_slug: str, organisation_header: str | None) -> IngestContext:
    """Authenticate the key and find the active usage event, or raise the 401/403/404 answer."""
    if not secret:
        raise IngestError(401, "Send an API key in the x-api-key header (or Authorization: Bearer).")
    prefix = api_key_split(secret=secret)
    row = None
    if prefix is not None:
        with hot_cursor() as cursor:
            cursor.execute(_CONTEXT_SQL, [api_slug, prefix])
            row = cursor.fetchone()
    if prefix is None or row is None or not hmac.compare_digest(row[2], api_key_hash(secret=secret)):
        raise IngestError(401, "Unknown API key.")
    organisation_id = row[1] if isinstance(row[1], uuid.UUID) else uuid.UUID(str(row[1]))
    api_key = ApiKey(
        id=row[0],
        organisation_id=organisation_id,
        prefix=prefix,
        key_hash=row[2],
        scope=row[3],
        revoked_at=_as_datetime(row[4]),
        last_used_at=_as_datetime(row[5]),
    )
    if api_key.revoked_at is not None:
        raise IngestError(401, "This API key has been revoked.")
    _organisation_check(organisation_id, organisation_header)
    if row[6] is None or row[10]:
        raise IngestError(404, f"No active usage event with API slug {api_slug!r} in this organisation.")
    dataschema = row[9] if isinstance(row[9], dict) else orjson.loads(row[9])
    usage_event = UsageEvent(
        id=row[6],
        organisation_id=organisation_id,
        api_slug=api_slug,
        kind=row[7],
        aggregate_period=row[8],
        dataschema=dataschema,
        archived=False,
        updated_at=_as_datetime(row[11]) or dt.datetime.min.replace(tzinfo=dt.UTC),
    )
    context = IngestContext(api_key=api_key, usage_event=usage_event)
    if _on_postgres():
        if len(_context_cache) >= CONTEXT_CACHE_SIZE:
            _context_cache.clear()
        _context_cache[(prefix, api_slug)] = IngestContext(api_key=api_key, usage_event=usage_event, cached=True)
    return context


# --- parsing ---


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


# --- the write path ---


# An aggregate record's period is found exactly as a metric's period is.
period_start_of = period_floor


def content_hash_of(record: ValidRecord) -> str:
    canonical = orjson.dumps(
        [record.customer_id, datetime_format(record.timestamp), record.data], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


def _error_rows(errors_to_log: list[tuple[Any, dict[str, list[str]]]]) -> list[tuple[str, bool, str]]:
    rows = []
    for payload, errors in errors_to_log:
        stored, truncated = _error_payload(payload)
        rows.append((orjson.dumps(stored, default=str).decode(), truncated, orjson.dumps(errors).decode()))
    return rows


def _insert_records_postgres(
    *,
    usage_event_id: int,
    rows: list[Candidate],
    received_at: dt.datetime,
    error_rows: list[tuple[str, bool, str]],
    api_key_prefix: str,
    guard: tuple[int, dt.datetime] | None = None,
) -> list[tuple[int, str | None]]:
    """Records and error-log rows in ONE statement, so it is atomic even in autocommit (no BEGIN/COMMIT
    round trips). Returns (id, idempotency_key) of the inserted records in insertion order: ids come
    from one sequence in the order the rows were inserted."""
    records_table, errors_table = UsageRecord._meta.db_table, IngestionError._meta.db_table
    dirty_table = DirtyBucket._meta.db_table
    guard_sql = _guard_sql(cached=guard is not None, event="%s", key="%s", updated_at="%s")
    guard_params: list[Any] = [usage_event_id, guard[0], guard[1]] if guard else [usage_event_id]
    # The error log's part is left out when there is nothing to log (most requests): every
    # data-modifying CTE costs the server time even when it inserts nothing.
    errors_sql = (
        f"""errs AS (
                INSERT INTO {errors_table}
                    (usage_event_id, received_at, payload, payload_truncated, errors, api_key_prefix)
                SELECT %s, %s, e.payload::jsonb, e.truncated, e.errors::jsonb, %s
                FROM unnest(%b::text[], %b::bool[], %b::text[]) AS e(payload, truncated, errors)
                WHERE EXISTS (SELECT 1 FROM ok)
            ), """
        if error_rows
        else ""
    )
    errors_params: list[Any] = (
        [
            usage_event_id,
            received_at,
            api_key_prefix,
            [e[0] for e in error_rows],
            [e[1] for e in error_rows],
            [e[2] for e in error_rows],
        ]
        if error_rows
        else []
    )
    # Hours are marked from the candidates (a duplicate's hour marked too only costs a recompute),
    # computed here rather than with date_trunc(..., 'UTC') in the server.
    hours = dirty_hours(c.record.timestamp for c in rows)
    if len(rows) == 1 and not error_rows:
        return _insert_one_postgres(
            usage_event_id=usage_event_id, row=rows[0], hour=hours[0], received_at=received_at, guard=guard
        )
    source = (
        "unnest(%b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[]) "
        "WITH ORDINALITY AS t(customer_id, ts, data, idem, hash, ord)"
    )
    hours_source = "unnest(%b::timestamptz[]) AS h"
    row_params = [
        [c.record.customer_id for c in rows],
        [c.record.timestamp for c in rows],
        [orjson.dumps(c.record.data).decode() for c in rows],
        [c.record.idempotency_key for c in rows],
        [c.content_hash for c in rows],
    ]
    with hot_cursor() as cursor:
        cursor.execute(
            f"""
            WITH ok AS ({guard_sql}), {errors_sql}ins AS (
                INSERT INTO {records_table} (usage_event_id, customer_id, "timestamp", period_start, data,
                                             idempotency_key, content_hash, received_at, voided, superseded)
                SELECT %s, t.customer_id, t.ts, NULL, t.data::jsonb, t.idem, t.hash, %s, false, false
                FROM {source}
                WHERE EXISTS (SELECT 1 FROM ok)
                ORDER BY t.ord
                ON CONFLICT (usage_event_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING id, idempotency_key, "timestamp"
            ), dirty AS (
                INSERT INTO {dirty_table} (usage_event_id, hour_start)
                SELECT %s, h FROM {hours_source} WHERE EXISTS (SELECT 1 FROM ins)
            )
            SELECT 0 AS part, (SELECT count(*) FROM ok) AS id, NULL AS idempotency_key
            UNION ALL
            SELECT 1, id, idempotency_key FROM ins
            ORDER BY part, id
            """,
            [
                *guard_params,
                *errors_params,
                usage_event_id,
                received_at,
                *row_params,
                usage_event_id,
                hours,
            ],
        )
        rows_back = cursor.fetchall()
    if not rows_back[0][1]:
        raise StaleContext()
    return [(int(r[1]), r[2]) for r in rows_back[1:]]


def _guard_sql(*, cached: bool, event: str, key: str, updated_at: str) -> str:
    """The query a write statement requires a row from (its placeholders given): the usage event exists
    (records have no foreign-key constraint, see usage/migrations/0005) and, for a cached context, the
    key is still active and the usage event unchanged (same updated_at, not archived). If it finds no
    row, nothing is written and StaleContext is raised."""
    events = UsageEvent._meta.db_table
    if not cached:
        return f"SELECT 1 FROM {events} e WHERE e.id = {event}"
    return f"""SELECT 1 FROM {ApiKey._meta.db_table} k JOIN {events} e ON e.id = {event}
        WHERE k.id = {key} AND k.revoked_at IS NULL AND NOT e.archived AND e.updated_at = {updated_at}"""


@functools.cache
def _insert_one_sql(*, guarded: bool) -> str:
    records_table, dirty_table = UsageRecord._meta.db_table, DirtyBucket._meta.db_table
    guard = _guard_sql(cached=guarded, event="$1::bigint", key="$9::bigint", updated_at="$10::timestamptz")
    # Leaner than the batch statement (no separate guard CTE, no counts): one row back means stored;
    # none means the guard failed or the idempotency key is taken, told apart by the caller.
    return f"""
        WITH ins AS (
            INSERT INTO {records_table} (usage_event_id, customer_id, "timestamp", period_start, data,
                                         idempotency_key, content_hash, received_at, voided, superseded)
            SELECT $1::bigint, $2::text, $3::timestamptz, NULL, $4::jsonb, $5::text, $6::text, $7::timestamptz,
                   false, false
            WHERE EXISTS ({guard})
            ON CONFLICT (usage_event_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING id
        ), dirty AS (
            INSERT INTO {dirty_table} (usage_event_id, hour_start) SELECT $1::bigint, $8::timestamptz FROM ins
        )
        SELECT id FROM ins
    """


def _insert_one_postgres(
    *,
    usage_event_id: int,
    row: Candidate,
    hour: dt.datetime,
    received_at: dt.datetime,
    guard: tuple[int, dt.datetime] | None,
) -> list[tuple[int, str | None]]:
    """The single-record request (most of the traffic): one prepared statement through libpq."""
    record = row.record
    params: list[Param] = [
        usage_event_id,
        record.customer_id,
        record.timestamp,
        orjson.dumps(record.data).decode(),
        record.idempotency_key,
        row.content_hash,
        received_at,
        hour,
    ]
    if guard:
        params += [guard[0], guard[1]]
    stored = hot_rows(_insert_one_sql(guarded=guard is not None), params)
    if stored:
        return [(int(stored[0][0] or 0), record.idempotency_key)]
    if guard is not None or record.idempotency_key is None:
        # Nothing written, and the statement cannot say whether the cached context is stale or the key
        # taken: the caller answers from the database's state (a fresh context, this path without a guard).
        raise StaleContext()
    return []  # the key is taken: the caller finds the record that holds it


def _insert_records(
    *, usage_event_id: int, rows: list[Candidate], received_at: dt.datetime, aggregate: bool
) -> list[tuple[int, str | None]]:
    """One INSERT for the whole batch; returns (id, idempotency_key) of the rows actually inserted, in order."""
    if not rows:
        return []
    table = UsageRecord._meta.db_table
    conflict = "ON CONFLICT (usage_event_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    # Aggregates go in as superseded; the newest of each (customer, period) is then made current,
    # so the partial unique index never sees two current rows mid-statement.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"""
                INSERT INTO {table} (usage_event_id, customer_id, "timestamp", period_start, data,
                                     idempotency_key, content_hash, received_at, voided, superseded)
                SELECT %s, t.customer_id, t.ts, t.period_start, t.data::jsonb, t.idem, t.hash, %s, false, %s
                FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
                     WITH ORDINALITY AS t(customer_id, ts, period_start, data, idem, hash, ord)
                ORDER BY t.ord
                {conflict}
                RETURNING id, idempotency_key
                """,
                [
                    usage_event_id,
                    received_at,
                    aggregate,
                    [c.record.customer_id for c in rows],
                    [c.record.timestamp for c in rows],
                    [c.period_start for c in rows],
                    [orjson.dumps(c.record.data).decode() for c in rows],
                    [c.record.idempotency_key for c in rows],
                    [c.content_hash for c in rows],
                ],
            )
        else:
            adapt = connection.ops.adapt_datetimefield_value
            received = adapt(received_at)
            params: list[Any] = []
            for c in rows:
                params.extend(
                    [
                        usage_event_id,
                        c.record.customer_id,
                        adapt(c.record.timestamp),
                        adapt(c.period_start) if c.period_start else None,
                        orjson.dumps(c.record.data).decode(),
                        c.record.idempotency_key,
                        c.content_hash,
                        received,
                        False,
                        aggregate,
                    ]
                )
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
            cursor.execute(
                f"""
                INSERT INTO {table} (usage_event_id, customer_id, "timestamp", period_start, data,
                                     idempotency_key, content_hash, received_at, voided, superseded)
                VALUES {values}
                {conflict}
                RETURNING id, idempotency_key
                """,
                params,
            )
        return [(int(r[0]), r[1]) for r in cursor.fetchall()]


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


def _error_payload(item: Any) -> tuple[Any, bool]:
    text = orjson.dumps(item, default=str).decode()
    if len(text) <= ERROR_PAYLOAD_MAX_CHARS:
        return item if not _has_decimal(item) else orjson.loads(text), False
    return text[:ERROR_PAYLOAD_MAX_CHARS], True


def _has_decimal(item: Any) -> bool:
    if isinstance(item, Decimal):
        return True
    if isinstance(item, dict):
        return any(_has_decimal(v) for v in item.values())
    if isinstance(item, list):
        return any(_has_decimal(v) for v in item)
    return False


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
    usage event's compiled validator, then store the batch with one statement per table."""
    usage_event, api_key = context.usage_event, context.api_key
    validate = record_validator(usage_event.dataschema)
    aggregate = usage_event.kind == UsageEventKind.AGGREGATE
    period = usage_event.aggregate_period or ""

    outcomes: list[Candidate | dict[str, list[str]]] = []
    first_by_key: dict[str, Candidate] = {}
    to_insert: list[Candidate] = []
    for index, item in enumerate(items):
        record, errors = validate(item)
        if record is None:
            outcomes.append(errors)
            continue
        out_of_bounds = timestamp_bounds_problems(record.timestamp, now=now, backfill=backfill)
        if out_of_bounds:
            outcomes.append(out_of_bounds)
            continue
        candidate = Candidate(
            index=index,
            record=record,
            content_hash=content_hash_of(record),
            period_start=period_start_of(record.timestamp, period) if aggregate else None,
        )
        key = record.idempotency_key
        if key is not None and key in first_by_key:
            candidate.same_as = first_by_key[key]
        else:
            if key is not None:
                first_by_key[key] = candidate
            to_insert.append(candidate)
        outcomes.append(candidate)

    rejected_payloads = [(items[i], o) for i, o in enumerate(outcomes) if isinstance(o, dict)]
    if _on_postgres() and not aggregate:
        inserted = _insert_records_postgres(
            usage_event_id=usage_event.id,
            rows=to_insert,
            received_at=now,
            error_rows=_error_rows(rejected_payloads),
            api_key_prefix=api_key.prefix,
            guard=(api_key.id, usage_event.updated_at) if context.cached else None,
        )
        _resolve_inserted(usage_event_id=usage_event.id, rows=to_insert, inserted=inserted)
        for outcome in outcomes:
            if isinstance(outcome, Candidate) and outcome.same_as is not None:
                _follow_first(outcome)
        reused = [(items[o.index], o.errors) for o in outcomes if isinstance(o, Candidate) and o.status == "rejected"]
        if reused:  # keys found taken only after the insert: logged in a second, independent write
            _log_errors(usage_event_id=usage_event.id, errors_to_log=reused, now=now, api_key_prefix=api_key.prefix)
        return _result(usage_event_id=usage_event.id, outcomes=outcomes)
    with transaction.atomic():
        if aggregate and to_insert:
            # Serialises aggregate writers per usage event, so "latest received wins" is well defined.
            UsageEvent.objects.select_for_update().filter(id=usage_event.id).values_list("id").first()
        inserted = _insert_records(usage_event_id=usage_event.id, rows=to_insert, received_at=now, aggregate=aggregate)
        _resolve_inserted(usage_event_id=usage_event.id, rows=to_insert, inserted=inserted)
        changed = [c.record.timestamp for c in to_insert if c.status == "accepted"]
        if aggregate:
            changed += _supersede(usage_event_id=usage_event.id, rows=to_insert)
        hours_mark_dirty(usage_event_id=usage_event.id, moments=changed)
        for outcome in outcomes:
            if isinstance(outcome, Candidate) and outcome.same_as is not None:
                _follow_first(outcome)
        errors_to_log = rejected_payloads + [
            (items[o.index], o.errors) for o in outcomes if isinstance(o, Candidate) and o.status == "rejected"
        ]
        if errors_to_log:
            _log_errors(
                usage_event_id=usage_event.id, errors_to_log=errors_to_log, now=now, api_key_prefix=api_key.prefix
            )
    return _result(usage_event_id=usage_event.id, outcomes=outcomes)


def _log_errors(
    *, usage_event_id: int, errors_to_log: list[tuple[Any, dict[str, list[str]]]], now: dt.datetime, api_key_prefix: str
) -> None:
    log = []
    for payload, errors in errors_to_log:
        stored, truncated = _error_payload(payload)
        log.append(
            IngestionError(
                usage_event_id=usage_event_id,
                received_at=now,
                payload=stored,
                payload_truncated=truncated,
                errors=errors,
                api_key_prefix=api_key_prefix,
            )
        )
    IngestionError.objects.bulk_create(log)


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


def api_key_mark_used(*, api_key: ApiKey, now: dt.datetime) -> None:
    api_key_touch(api_key=api_key, now=now, min_interval_seconds=settings.API_KEY_TOUCH_SECONDS)
