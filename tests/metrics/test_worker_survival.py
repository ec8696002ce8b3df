"""Metrics stay correct through a broker outage and a killed worker, with no one restarting anything.

Real processes on PostgreSQL and a private Redis (never the shared one: these tests stop theirs):
gunicorn takes usage, a prefork Celery worker with embedded beat (`worker -B`, as in the outage that
killed it) or the supervised web/worker/beat of deploy/supervisord.conf refresh the metric.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from metrics import tasks
from metrics.definitions import metric_create
from metrics.models import BillableMetric, MetricValue, SweepHeartbeat
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.processes import (
    ROOT,
    PrivateRedis,
    celery_app_on_broker,
    celery_process,
    free_port,
    gunicorn_server,
    http_post,
    private_redis,
    process_env,
    supervised_pid,
    supervisord,
)
from usage.models import UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.celery import app

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    """A private Redis that this process, its workers and its web servers all use as the broker."""
    with private_redis() as redis, celery_app_on_broker(redis.url):
        eager = app.conf.task_always_eager
        app.conf.task_always_eager = False
        try:
            yield redis
        finally:
            app.conf.task_always_eager = eager


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def count_metric(*, history_months: int = 0) -> str:
    """An organisation with a usage event and an hourly count metric; returns a full API key.

    With `history_months`, records over that many past months are written straight to the table (as a
    restore or a migration would), so the metric holds none of them until a history recompute runs.
    """
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    start = timezone.now() - dt.timedelta(days=31 * history_months)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"h{i % 5}",
            timestamp=start + dt.timedelta(hours=12 * i),
            data={"cpu_usage_hours": 1},
            content_hash="history",
            received_at=start,
        )
        for i in range(history_months * 60)
    )
    metric_create(
        actor=system_actor(organisation=organisation),
        body={
            "name": "Events",
            "slug": "events",
            "usage_event": "compute_hours",
            "aggregation": "count",
            "granularity": "hour",
        },
    )
    return api_key_make(organisation=organisation, scope="full").secret


def metric_count() -> int:
    return sum(int(v.value or 0) for v in MetricValue.objects.filter(metric__slug="events"))


def health(*args: str) -> tuple[int, str]:
    """`manage.py health ARGS` run as monitoring runs it: a new process, on the same database and broker."""
    result = subprocess.run(
        [sys.executable, "manage.py", "health", *args],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def last_sweep() -> dt.datetime:
    finished_at = SweepHeartbeat.objects.values_list("finished_at", flat=True).first()
    return finished_at or dt.datetime.min.replace(tzinfo=dt.UTC)


def reconciled() -> bool:
    try:
        call_command("reconcile_metrics", stdout=io.StringIO())
    except SystemExit:
        return False
    return True


class Ingestion:
    """Posts batches of usage to a web server until stopped, counting the records it accepted (202)."""

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret
        self.accepted = 0
        self.refused: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        batch = 0
        while not self._stop.is_set():
            batch += 1
            at = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
            records = [{"customer_id": f"c{i % 7}", "timestamp": at, "data": {"cpu_usage_hours": 1}} for i in range(50)]
            status, _ = http_post(
                f"{self.url}/usage/compute_hours",
                json.dumps(records).encode(),
                {"x-api-key": self.secret, "content-type": "application/json"},
            )
            if status == 202:
                self.accepted += len(records)
            else:
                self.refused.append(status)
            time.sleep(0.05)

    def __enter__(self) -> Ingestion:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_worker_busy_refreshing_survives_a_10_second_redis_outage_and_metrics_catch_up(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    secret = count_metric(history_months=24)
    history = UsageRecord.objects.count()
    log = tmp_path / "worker.log"
    with (
        gunicorn_server() as url,
        celery_process(
            "worker",
            "-B",
            "--loglevel=INFO",
            "--concurrency=4",
            "--schedule",
            str(tmp_path / "beat"),
            log=log,
            # A history recompute takes ~12 s (24 month chunks), so it is running, unacknowledged, when
            # Redis goes: the state in which the worker used to die.
            METRICS_RECOMPUTE_THROTTLE_SECONDS="0.5",
        ) as worker,
    ):
        with Ingestion(url, secret) as ingestion:
            # Busy: refreshes for the ingested hours keep arriving and running, and a recompute runs.
            assert wait_for(lambda: metric_count() > 0, 30), log.read_text()[-3000:]
            metric = BillableMetric.objects.get()
            tasks.metric_recompute_task.delay(metric.id, metric.version)
            assert wait_for(lambda: BillableMetric.objects.get().recompute_done >= 2, 30), log.read_text()[-3000:]
            broker.stop()
            time.sleep(10)
            broker.start()
            back = time.monotonic()
            # Usage keeps coming after the recompute ends, so only a live worker can bring the metric up
            # to date (the recompute's last month chunk would otherwise count it).
            assert wait_for(lambda: BillableMetric.objects.get().recompute_state == "idle", 50)
            time.sleep(3)
        assert ingestion.refused == []  # ingestion never depended on Redis
        assert UsageRecord.objects.count() == history + ingestion.accepted

        # The worker is the same process, still running: nobody restarted it.
        assert worker.poll() is None, log.read_text()[-5000:]
        within = 60 - (time.monotonic() - back)
        assert wait_for(lambda: metric_count() == history + ingestion.accepted and reconciled(), within), (
            metric_count(),
            history + ingestion.accepted,
            log.read_text()[-5000:],
        )
        caught_up_in = time.monotonic() - back
        # Beat inside the worker survived too: its sweep runs again, and the health check says so.
        swept = last_sweep()
        assert wait_for(lambda: last_sweep() > swept, 15)
        code, report = health("--ping")
        assert code == 0, report
        assert report.strip().endswith("OK"), report
        assert worker.poll() is None
    text = log.read_text()
    assert "Connection to broker lost" in text  # the outage did reach the worker
    assert "Unrecoverable error" not in text, text[-5000:]
    print(f"accepted {ingestion.accepted} records; metrics reconciled {caught_up_in:.1f} s after Redis came back")


def test_a_worker_killed_mid_task_under_supervisord_is_started_again_and_metrics_catch_up(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    secret = count_metric()
    port = free_port()
    with supervisord(tmp=tmp_path, port=port) as conf:
        assert wait_for(lambda: bool(app.control.ping(timeout=0.5)), 30)
        killed = supervised_pid(conf, "worker")
        assert killed > 0
        with Ingestion(f"http://127.0.0.1:{port}", secret) as ingestion:
            assert wait_for(lambda: metric_count() > 0, 30)
            # The worker's whole process group (main process and pool children), mid-refresh, as the
            # OOM killer would: no warm shutdown, no ack, no cleanup.
            os.killpg(killed, signal.SIGKILL)
            restarted = time.monotonic()
            assert wait_for(lambda: supervised_pid(conf, "worker") not in (0, killed), 20)
            assert wait_for(lambda: bool(app.control.ping(timeout=0.5)), 30)
            time.sleep(2)
        assert ingestion.refused == []
        assert UsageRecord.objects.count() == ingestion.accepted
        assert wait_for(lambda: metric_count() == ingestion.accepted and reconciled(), 60), (
            metric_count(),
            ingestion.accepted,
            (tmp_path / "supervisord.log").read_text()[-5000:],
        )
        print(f"metrics reconciled {time.monotonic() - restarted:.1f} s after the kill")
        code, report = health("--ping")
        assert code == 0, report
        assert report.strip().endswith("OK"), report
    # supervisord saw the kill and restarted the program itself.
    assert "exited: worker (terminated by SIGKILL" in (tmp_path / "supervisord.log").read_text()


def test_beat_survives_a_redis_outage_and_its_sweeps_resume(broker: PrivateRedis, tmp_path: Path) -> None:
    """Beat on its own, as in production: it logs the sends it cannot make and goes on ticking."""
    count_metric()
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    with (
        celery_process("worker", "--loglevel=INFO", "--concurrency=1", log=worker_log),
        celery_process(
            "beat", "--loglevel=INFO", "--schedule", str(tmp_path / "beat"), log=beat_log, wait_for_ping=False
        ) as beat,
    ):
        assert wait_for(lambda: SweepHeartbeat.objects.exists(), 30), beat_log.read_text()[-3000:]
        broker.stop()
        time.sleep(10)
        assert beat.poll() is None, beat_log.read_text()[-3000:]
        before = last_sweep()
        broker.start()
        assert wait_for(lambda: last_sweep() > before, 30), (
            beat_log.read_text()[-3000:],
            worker_log.read_text()[-3000:],
        )
        assert beat.poll() is None


def test_health_with_ping_fails_when_no_worker_answers(broker: PrivateRedis) -> None:
    SweepHeartbeat.objects.create(finished_at=timezone.now())  # a fresh sweep: only the ping is missing
    code, report = health("--ping", "--ping-timeout", "1")
    assert code == 1, report
    assert "workers answering: 0" in report
    assert "problem: no worker answered a ping" in report


def test_two_beats_by_mistake_change_no_result(broker: PrivateRedis, tmp_path: Path) -> None:
    """Two beats send every periodic task twice; the metric still matches its records exactly."""
    secret = count_metric()
    with (
        gunicorn_server() as url,
        celery_process("worker", "--loglevel=INFO", "--concurrency=2", log=tmp_path / "worker.log"),
        celery_process(
            "beat", "--schedule", str(tmp_path / "beat1"), log=tmp_path / "beat1.log", wait_for_ping=False
        ) as beat1,
        celery_process(
            "beat", "--schedule", str(tmp_path / "beat2"), log=tmp_path / "beat2.log", wait_for_ping=False
        ) as beat2,
    ):
        with Ingestion(url, secret) as ingestion:
            time.sleep(8)
        assert wait_for(lambda: metric_count() == ingestion.accepted and reconciled(), 60), (
            metric_count(),
            ingestion.accepted,
        )
        assert beat1.poll() is None
        assert beat2.poll() is None
