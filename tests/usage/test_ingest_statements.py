"""The single-record statement and the batch statement, generated from the same record columns,
answer alike and store alike on the same inputs (PostgreSQL: SQLite has the one multi-row INSERT)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from tests.factories import api_key_make, organisation_make, usage_event_make
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
