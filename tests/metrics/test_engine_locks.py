"""Each metric's writers serialise on the metric's own lock, not on its usage event's: a long recompute
of one metric (a SQL metric running its time limit, say) holds back no other metric of the usage
event, and the refreshes meanwhile defer what they owe it, so nothing is lost (PostgreSQL: SQLite
serialises writers and has no advisory locks)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.utils import timezone

from metrics.engine.refresh import _lock_metric, metric_deferred_refresh, metric_values_refresh
from metrics.models import BillableMetric, MetricValue
from tests.factories import organisation_make, usage_event_make
from tests.metrics.test_sql_budget import SUM_PER_CUSTOMER, metric_make
from usage.dirty import hours_mark_dirty
from usage.models import DirtyBucket, UsageEvent, UsageRecord

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
HOUR = (timezone.now() - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)


@contextmanager
def metric_lock_held_elsewhere(metric_id: int) -> Iterator[None]:
    """The metric's lock held by another connection (as a recompute's chunk holds it) until the block ends."""
    taken, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                _lock_metric(metric_id, wait=True)
                taken.set()
                release.wait(30)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            taken.set()
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        assert not errors, errors
        yield
    finally:
        release.set()
        holder.join(10)


def records_add(usage_event: UsageEvent, customers: list[str]) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=customer,
            timestamp=HOUR + dt.timedelta(seconds=i),
            data={"cpu_usage_hours": 2},
            content_hash="x",
            received_at=HOUR,
        )
        for i, customer in enumerate(customers)
    )
    hours_mark_dirty(usage_event_id=usage_event.id, moments=[HOUR])


def values_of(metric: BillableMetric) -> dict[str, str | None]:
    return {v.customer_id: v.value for v in MetricValue.objects.filter(metric=metric)}


def test_a_refresh_stores_a_count_metric_while_a_sql_metric_of_its_usage_event_is_locked() -> None:
    assert connection.vendor == "postgresql"
    # Given a usage event with a SQL metric A and a count metric B, both up to date
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    sql_metric, count_metric = (
        metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER),
        metric_make(organisation, "calls"),
    )
    records_add(usage_event, ["a", "b"])
    metric_values_refresh(usage_event_id=usage_event.id)  # committed: its drain ran after commit (eager)
    assert values_of(sql_metric) == {"a": "2", "b": "2"}
    assert values_of(count_metric) == {"a": "1", "b": "1"}

    # When another connection holds A's lock (a long recompute of A) and new records arrive
    with metric_lock_held_elsewhere(sql_metric.id):
        records_add(usage_event, ["a", "c"])
        began = time.monotonic()
        metric_values_refresh(usage_event_id=usage_event.id)
        took = time.monotonic() - began

        # Then the refresh does not wait: B's values are stored, the hours are consumed
        assert took < 2, took
        assert values_of(count_metric) == {"a": "2", "b": "1", "c": "1"}
        assert not DirtyBucket.objects.exists()
        # and A owes the hour (its drain, enqueued after commit, found the lock busy and left it owed)
        owed = BillableMetric.objects.get(id=sql_metric.id)
        assert owed.deferred_ranges == [[iso(HOUR), iso(HOUR + dt.timedelta(hours=1))]]
        assert owed.deferred_until is not None
        assert owed.deferred_until <= timezone.now()
        assert values_of(sql_metric) == {"a": "2", "b": "2"}
        assert metric_deferred_refresh(metric_id=sql_metric.id) is False  # busy: nothing computed, still owed
        assert BillableMetric.objects.get(id=sql_metric.id).deferred_ranges == owed.deferred_ranges

    # When A's lock is released and its drain runs
    assert metric_deferred_refresh(metric_id=sql_metric.id) is True

    # Then A's values include the new records, and it owes nothing
    assert values_of(sql_metric) == {"a": "4", "b": "2", "c": "2"}
    drained = BillableMetric.objects.get(id=sql_metric.id)
    assert (drained.deferred_ranges, drained.deferred_until) == ([], None)


def test_a_count_metric_whose_lock_is_busy_is_deferred_not_lost() -> None:
    # Given a usage event with two count metrics
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    locked, other = metric_make(organisation, "calls"), metric_make(organisation, "calls2")

    # When records arrive while the first one's lock is held elsewhere
    with metric_lock_held_elsewhere(locked.id):
        records_add(usage_event, ["a", "b"])
        metric_values_refresh(usage_event_id=usage_event.id)

        # Then the other is stored and the locked one owes the hour
        assert values_of(other) == {"a": "1", "b": "1"}
        assert values_of(locked) == {}
        assert BillableMetric.objects.get(id=locked.id).deferred_ranges == [
            [iso(HOUR), iso(HOUR + dt.timedelta(hours=1))]
        ]

    # and once the lock is free, its drain stores it
    assert metric_deferred_refresh(metric_id=locked.id) is True
    assert values_of(locked) == {"a": "1", "b": "1"}


def test_a_drain_keeps_owed_what_was_deferred_while_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a count metric that owes its hour
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    metric = metric_make(organisation, "calls")
    with metric_lock_held_elsewhere(metric.id):
        records_add(usage_event, ["a"])
        metric_values_refresh(usage_event_id=usage_event.id)
    assert BillableMetric.objects.get(id=metric.id).deferred_ranges != []

    # When, while its drain computes the hour, a refresh defers the same hour again (records the drain's
    # computation may not have seen), once
    from metrics.engine import refresh
    from metrics.engine.budget import metric_defer

    compute = refresh.metric_compute
    calls: list[int] = []

    def compute_then_defer(**kwargs: object) -> object:
        computed = compute(**kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:
            metric_defer(metric_id=metric.id, ranges=[(HOUR, HOUR + dt.timedelta(hours=1))], due=timezone.now())
        return computed

    monkeypatch.setattr(refresh, "metric_compute", compute_then_defer)
    drained = metric_deferred_refresh(metric_id=metric.id)

    # Then the drain did not drop that deferral: it computed the hour again in a second pass
    assert drained is True
    assert len(calls) == 2
    assert values_of(metric) == {"a": "1"}
    assert BillableMetric.objects.get(id=metric.id).deferred_ranges == []


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def drains_enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The metric ids of the drain tasks sent, recorded instead of run: the claim decides how many are
    sent, which is what these tests count (the drains themselves are run by the tests)."""
    from metrics.tasks import metric_deferred_refresh_task

    sent: list[int] = []
    monkeypatch.setattr(
        metric_deferred_refresh_task, "apply_async", lambda args, *rest, **kwargs: sent.append(int(args[0]))
    )
    return sent


def test_a_metric_has_one_drain_queued_however_many_refreshes_defer_it(drains_enqueued: list[int]) -> None:
    from metrics import tasks

    # Given a usage event with a SQL metric (every refresh defers its periods, due at once)
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    sql_metric = metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER)

    # When records arrive and the usage event is refreshed five times before any drain runs
    for customer in "abcde":
        records_add(usage_event, [customer])
        metric_values_refresh(usage_event_id=usage_event.id)
    # and the sweep runs meanwhile
    tasks.metrics_sweep_task()

    # Then one drain was enqueued, and the metric holds its claim
    assert drains_enqueued == [sql_metric.id]
    assert BillableMetric.objects.get(id=sql_metric.id).drain_claimed_until is not None

    # When that drain runs
    assert metric_deferred_refresh(metric_id=sql_metric.id) is True

    # Then it computed every deferred record and gave the claim back, enqueueing nothing more
    assert values_of(sql_metric) == dict.fromkeys("abcde", "2")
    assert BillableMetric.objects.get(id=sql_metric.id).drain_claimed_until is None
    assert drains_enqueued == [sql_metric.id]
    # and the next refresh enqueues the next drain
    records_add(usage_event, ["f"])
    metric_values_refresh(usage_event_id=usage_event.id)
    assert drains_enqueued == [sql_metric.id] * 2


def test_a_claim_whose_drain_died_lapses_and_the_sweep_enqueues_it_again(drains_enqueued: list[int]) -> None:
    from metrics import tasks

    # Given a SQL metric whose drain was claimed and enqueued, then lost with its worker
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    sql_metric = metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER)
    records_add(usage_event, ["a"])
    metric_values_refresh(usage_event_id=usage_event.id)
    assert drains_enqueued == [sql_metric.id]

    # When the sweep runs while the claim holds, nothing is enqueued
    tasks.metrics_sweep_task()
    assert drains_enqueued == [sql_metric.id]

    # When the claim has lapsed
    BillableMetric.objects.filter(id=sql_metric.id).update(drain_claimed_until=timezone.now() - dt.timedelta(seconds=1))
    tasks.metrics_sweep_task()

    # Then the sweep claims and enqueues the drain again, once, and that drain stores what was owed
    tasks.metrics_sweep_task()
    assert drains_enqueued == [sql_metric.id] * 2
    assert metric_deferred_refresh(metric_id=sql_metric.id) is True
    assert values_of(sql_metric) == {"a": "2"}


def test_a_drain_enqueues_its_successor_for_what_was_deferred_while_it_ran(
    monkeypatch: pytest.MonkeyPatch, drains_enqueued: list[int]
) -> None:
    # Given a SQL metric whose one drain is queued
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    sql_metric = metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER)
    records_add(usage_event, ["a"])
    metric_values_refresh(usage_event_id=usage_event.id)
    assert drains_enqueued == [sql_metric.id]

    # When a refresh defers it again during each of the drain's passes (records it may not have seen)
    from metrics.engine import refresh

    compute = refresh.metric_compute

    def compute_then_refresh(**kwargs: object) -> object:
        computed = compute(**kwargs)  # type: ignore[arg-type]
        records_add(usage_event, ["b"])
        metric_values_refresh(usage_event_id=usage_event.id)  # cannot claim: the drain holds the claim
        return computed

    monkeypatch.setattr(refresh, "metric_compute", compute_then_refresh)
    assert metric_deferred_refresh(metric_id=sql_metric.id, max_passes=2) is False
    monkeypatch.setattr(refresh, "metric_compute", compute)

    # Then no refresh enqueued a drain while it ran, and the drain enqueued its one successor when it ended
    assert drains_enqueued == [sql_metric.id] * 2
    assert BillableMetric.objects.get(id=sql_metric.id).drain_claimed_until is not None
    # and the successor computes what was deferred meanwhile
    assert metric_deferred_refresh(metric_id=sql_metric.id) is True
    assert values_of(sql_metric) == {"a": "2", "b": "4"}
    assert BillableMetric.objects.get(id=sql_metric.id).drain_claimed_until is None


def test_no_drain_is_enqueued_for_a_failed_metric_or_one_past_its_budget(drains_enqueued: list[int]) -> None:
    from metrics.models import SqlBudgetCharge

    # Given a usage event with two SQL metrics: one FAILED (in backoff), one whose organisation has spent
    # its SQL budget for this minute
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    failed = metric_make(organisation, "failed", sql=SUM_PER_CUSTOMER)
    BillableMetric.objects.filter(id=failed.id).update(
        recompute_state="failed", recompute_retry_at=timezone.now() + dt.timedelta(minutes=5)
    )
    other_org = organisation_make()
    other_event = usage_event_make(organisation=other_org)
    spent = metric_make(other_org, "spent", sql=SUM_PER_CUSTOMER)
    from django.conf import settings

    SqlBudgetCharge.objects.create(
        organisation=other_org, charged_at=timezone.now(), milliseconds=settings.METRIC_SQL_BUDGET_MS_PER_MINUTE
    )

    # When records arrive for both and their usage events are refreshed
    records_add(usage_event, ["a"])
    records_add(other_event, ["a"])
    metric_values_refresh(usage_event_id=usage_event.id)
    metric_values_refresh(usage_event_id=other_event.id)

    # Then no drain was enqueued: the failed metric's retry recomputes everything, and the other's
    # periods are owed until its budget's next window, when the sweep enqueues its drain
    assert drains_enqueued == []
    owed = BillableMetric.objects.get(id=spent.id)
    assert owed.deferred_until is not None
    assert owed.deferred_until > timezone.now()
    assert owed.drain_claimed_until is None


def test_one_refresh_of_a_usage_event_is_queued_whatever_the_web_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh claim lives in Redis (production mode), shared by every web process."""
    from django.conf import settings

    from metrics import dispatch, tasks

    assert settings.REDIS_URL
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(
        tasks.metrics_refresh_task, "apply_async", lambda args, *rest, **kwargs: sent.append(tuple(args))
    )
    usage_event = usage_event_make(organisation=organisation_make())
    other_event = usage_event_make(organisation=organisation_make())

    # When records of a usage event arrive in four web processes, each past its own debounce
    for _ in range(4):
        monkeypatch.setattr(dispatch, "_last_enqueued", {})
        dispatch.metrics_refresh_soon(usage_event_id=usage_event.id)
    # and a record of another usage event arrives
    dispatch.metrics_refresh_soon(usage_event_id=other_event.id)

    # Then one refresh of each is queued
    assert [usage_event_id for usage_event_id, _ in sent] == [usage_event.id, other_event.id]
    (_, token), (_, other_token) = sent

    # When a refresh task that does not hold the claim starts (one queued before its claim lapsed),
    # the claim still holds
    tasks.metrics_refresh_task.run(usage_event.id, "not-the-token")
    monkeypatch.setattr(dispatch, "_last_enqueued", {})
    dispatch.metrics_refresh_soon(usage_event_id=usage_event.id)
    assert len(sent) == 2

    # When the queued refresh starts, the next record queues the next refresh
    tasks.metrics_refresh_task.run(usage_event.id, token)
    monkeypatch.setattr(dispatch, "_last_enqueued", {})
    dispatch.metrics_refresh_soon(usage_event_id=usage_event.id)
    assert len(sent) == 3
    assert sent[2][0] == usage_event.id
    dispatch.refresh_claim_release(usage_event_id=usage_event.id, token=sent[2][1])
    dispatch.refresh_claim_release(usage_event_id=other_event.id, token=other_token)
