"""The single-record statement and the batch statement, generated from the same record columns,
answer alike and store alike on the same inputs (PostgreSQL: SQLite has the one multi-row INSERT)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError
from django.utils import timezone

from tests.factories import api_key_make, organisation_make, usage_event_make
from usage.ingestion import store
from usage.ingestion.context import StaleContext
from usage.ingestion.statements import RECORD_COLUMNS, PostgresWrite, RecordRow, RecordsWrite
from usage.ingestion.store import postgres_write_many, postgres_write_one
from usage.models import DirtyBucket, UsageEvent, UsageRecord
from zenskar_site.accounts.models import ApiKey

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

Writer = Callable[[PostgresWrite], list[tuple[int, str | None]]]
MOMENT = timezone.now().replace(microsecond=123456) - dt.timedelta(minutes=5)


def a_write(usage_event: UsageEvent, *, key: str | None, content: str = "1", guard: Any = None) -> PostgresWrite:
    row = RecordRow(
        customer_id="cus_1",
        timestamp=MOMENT,
        period_start=None,
        data=f'{{"cpu_usage_hours": {content}}}',
        idempotency_key=key,
        content_hash=f"hash-{content}",
    )
    return PostgresWrite(
        records=RecordsWrite(usage_event_id=usage_event.id, received_at=MOMENT, superseded=False, rows=[row]),
        error_rows=[],
        api_key_prefix="",
        dirty_hours=[MOMENT.replace(minute=0, second=0, microsecond=0)],
        guard=guard,
    )


def outcome(writer: Writer, write: PostgresWrite) -> str:
    try:
        stored = writer(write)
    except StaleContext:
        return "stale"
    return "stored" if stored else "nothing"


def stored_columns(usage_event: UsageEvent) -> list[tuple[Any, ...]]:
    names = [c.name for c in RECORD_COLUMNS if c.name != "usage_event_id"]
    return list(UsageRecord.objects.filter(usage_event=usage_event).order_by("id").values_list(*names))


def test_both_statements_answer_and_store_alike_on_the_same_inputs() -> None:
    organisation = organisation_make()
    key = api_key_make(organisation=organisation, scope="ingest").api_key
    events = {
        postgres_write_one: usage_event_make(organisation=organisation, api_slug="one"),
        postgres_write_many: usage_event_make(organisation=organisation, api_slug="many"),
    }
    answers: dict[Writer, list[str]] = {writer: [] for writer in events}

    for writer, usage_event in events.items():
        fresh = UsageEvent.objects.get(id=usage_event.id)
        guard = (key.id, fresh.updated_at)
        for write in (
            a_write(usage_event, key="k1"),  # new, with a key
            a_write(usage_event, key=None),  # new, without a key
            a_write(usage_event, key="k1"),  # the same key again
            a_write(usage_event, key="k2", guard=guard),  # a cached context that still holds
            a_write(usage_event, key="k3", guard=(key.id, fresh.updated_at - dt.timedelta(seconds=1))),  # stale
        ):
            answers[writer].append(outcome(writer, write))

    assert (
        answers[postgres_write_one]
        == answers[postgres_write_many]
        == [
            "stored",
            "stored",
            "nothing",
            "stored",
            "stale",
        ]
    )
    one, many = stored_columns(events[postgres_write_one]), stored_columns(events[postgres_write_many])
    assert one == many
    assert [row[4] for row in one] == ["k1", None, "k2"]  # idempotency keys, in order
    for usage_event in events.values():
        assert DirtyBucket.objects.filter(usage_event_id=usage_event.id).count() == 3  # one per stored write


def test_a_taken_key_under_a_cached_guard_is_told_apart_by_the_caller() -> None:
    """The single statement cannot tell a failed guard from a taken key: it says stale, and the caller
    (usage/ingestion/http.py) reloads the context and writes again without the guard, where it finds the key."""
    organisation = organisation_make()
    key = api_key_make(organisation=organisation, scope="ingest").api_key
    usage_event = usage_event_make(organisation=organisation)
    guard = (key.id, UsageEvent.objects.get(id=usage_event.id).updated_at)
    postgres_write_one(a_write(usage_event, key="k1"))

    assert outcome(postgres_write_many, a_write(usage_event, key="k1", guard=guard)) == "nothing"
    assert outcome(postgres_write_one, a_write(usage_event, key="k1", guard=guard)) == "stale"
    assert outcome(postgres_write_one, a_write(usage_event, key="k1")) == "nothing"
    ApiKey.objects.filter(id=key.id).update(revoked_at=timezone.now())
    assert outcome(postgres_write_many, a_write(usage_event, key="k9", guard=guard)) == "stale"
    assert outcome(postgres_write_one, a_write(usage_event, key="k9", guard=guard)) == "stale"
    assert UsageRecord.objects.filter(usage_event=usage_event).count() == 1


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_a_plain_insert_meets_a_taken_key_and_runs_again_skipping_it(monkeypatch: Any) -> None:
    """Outside a transaction the write first runs as a plain INSERT; a taken key fails it as a whole, and it
    runs again with ON CONFLICT, which stores the rest; that usage event's next writes skip taken keys at once."""
    statements: list[bool] = []  # per statement run: whether it skips taken keys
    real_hot_rows = store.hot_rows

    def spy(sql: str, params: Any) -> Any:
        statements.append("ON CONFLICT" in sql)
        return real_hot_rows(sql, params)

    monkeypatch.setattr(store, "hot_rows", spy)
    monkeypatch.setattr(store, "_key_taken_at", {})
    usage_event = usage_event_make(organisation=organisation_make())
    other = usage_event_make(organisation=organisation_make(name="Other"), api_slug="other")

    assert outcome(postgres_write_one, a_write(usage_event, key="k1")) == "stored"
    assert outcome(postgres_write_one, a_write(usage_event, key=None)) == "stored"
    assert statements == [False, False]

    statements.clear()
    batch = a_write(usage_event, key="k1")
    rows = [*batch.records.rows, batch.records.rows[0]._replace(idempotency_key="k2")]
    batch = PostgresWrite(**{**vars(batch), "records": RecordsWrite(**{**vars(batch.records), "rows": rows})})
    assert [key for _, key in postgres_write_many(batch)] == ["k2"]  # k1 is taken: skipped, k2 stored
    assert statements == [False, True]
    assert usage_event.id in store._key_taken_at

    statements.clear()
    assert outcome(postgres_write_one, a_write(usage_event, key="k3")) == "stored"
    assert outcome(postgres_write_one, a_write(other, key="k1")) == "stored"  # another usage event: plain
    assert statements == [True, False]
    assert [row[4] for row in stored_columns(usage_event)] == ["k1", None, "k2", "k3"]


@pytest.mark.django_db(transaction=True)
def test_a_plain_insert_failing_on_another_constraint_is_not_taken_for_a_taken_key() -> None:
    usage_event = usage_event_make(organisation=organisation_make())
    stored = postgres_write_one(a_write(usage_event, key="k1"))
    taken_id = stored[0][0]
    retried: list[bool] = []

    def statement(skip_taken_keys: bool) -> str:
        retried.append(skip_taken_keys)
        return (  # the primary key, not the idempotency key, is taken
            "INSERT INTO usage_usagerecord (id, usage_event_id, customer_id, timestamp, data, idempotency_key, "
            "content_hash, received_at, voided, superseded) "
            "SELECT %s, usage_event_id, customer_id, timestamp, data, 'k2', content_hash, received_at, voided, "
            "superseded FROM usage_usagerecord WHERE id = %s"
        )

    with pytest.raises(IntegrityError):
        store._records_insert(a_write(usage_event, key="k2"), statement, [taken_id, taken_id])
    assert retried == [False]
    assert usage_event.id not in store._key_taken_at
