"""Metric engine benchmark on PostgreSQL, against the machine's own limit in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/14 python -m bench.aggregate

1. the limit: the same `sum by day` GROUP BY, written by hand in SQL, over >= 5 million records;
2. the engine: a full recompute of a `sum` by `day` metric over the same rows (month chunks, upserts);
3. freshness: with gunicorn, a Celery worker and beat running as in production, a steady stream of
   >= 500 records/s, and probe records whose time from 202 to the metric value is measured.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import admin_url, gunicorn, step

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = "bench_aggregate"
RECORDS = int(os.environ.get("BENCH_RECORDS", "5000000"))
CUSTOMERS = 1000
DAYS = 30
RATE = int(os.environ.get("BENCH_RATE", "500"))
FRESHNESS_SECONDS = int(os.environ.get("BENCH_FRESHNESS_SECONDS", "30"))


def bench_url() -> str:
    return admin_url().rsplit("/", 1)[0] + "/" + BENCH_DB


def env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": bench_url().replace("postgresql://", "postgres://", 1),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "INGEST_RATE_LIMIT": "0",
        "CELERY_EAGER": "0",
        "METRICS_SWEEP_SECONDS": "1",
    }


def manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env(), check=True, capture_output=capture, text=True
    )
    return result.stdout if capture else ""


def shell(code: str) -> str:
    return manage("shell", "-c", code, capture=True).strip().splitlines()[-1]


def setup() -> tuple[str, int]:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    step("migrating the benchmark database")
    manage("migrate", "-v0")
    key = shell(
        "from zenskar_site.accounts.services import organisation_create, api_key_create\n"
        "from zenskar_site.accounts.actors import system_actor\n"
        "from usage.services import usage_event_create\n"
        "org, _ = organisation_create(name='Bench', admin_email='bench@example.com', password='bench-password')\n"
        "actor = system_actor(organisation=org)\n"
        "usage_event_create(actor=actor, name='Compute', api_slug='compute', dataschema="
        "{'data': {'cpu_usage_hours': 'Float64', 'region': 'Nullable(String)'}})\n"
        "print(api_key_create(actor=actor, name='bench', scope='full')[1])\n"
    )
    with psycopg.connect(bench_url()) as conn:
        event_id = int(conn.execute("SELECT id FROM usage_usageevent WHERE api_slug = 'compute'").fetchone()[0])  # type: ignore[index]
    return key, event_id


def load(event_id: int) -> None:
    """RECORDS rows over the last DAYS days, by COPY (the data set, not a measurement)."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=DAYS)
    step_seconds = DAYS * 86400 / RECORDS
    received = dt.datetime.now(dt.UTC).isoformat()
    chunk = 200_000
    with psycopg.connect(bench_url()) as conn:
        for offset in range(0, RECORDS, chunk):
            buffer = io.StringIO()
            for i in range(offset, min(offset + chunk, RECORDS)):
                moment = (start + dt.timedelta(seconds=i * step_seconds)).isoformat()
                buffer.write(
                    f'{event_id}\tcus_{i % CUSTOMERS}\t{moment}\t{{"cpu_usage_hours": {(i % 97) / 4}}}\t'
                    f"{'0' * 64}\t{received}\tf\tf\n"
                )
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY usage_usagerecord (usage_event_id, customer_id, timestamp, data, content_hash, received_at, "
                    "voided, superseded) FROM STDIN"
                ) as copy,
            ):
                copy.write(buffer.getvalue())
            conn.commit()
            print(f"\r[bench] loaded {min(offset + chunk, RECORDS):,}/{RECORDS:,} records", end="", flush=True)
        print()
        conn.execute("ANALYZE usage_usagerecord")
        conn.commit()


def hand_written_group_by(event_id: int) -> float:
    sql = """
        SELECT customer_id, date_trunc('day', "timestamp", 'UTC') AS day,
               SUM(CAST(data->>'cpu_usage_hours' AS NUMERIC))
        FROM usage_usagerecord
        WHERE usage_event_id = %s AND NOT voided AND NOT superseded
        GROUP BY customer_id, day
    """
    with psycopg.connect(bench_url()) as conn:
        conn.execute(sql, [event_id]).fetchall()  # warm the cache, as the engine's run will find it
        started = time.perf_counter()
        rows = conn.execute(sql, [event_id]).fetchall()
        elapsed = time.perf_counter() - started
    step(f"hand-written GROUP BY: {len(rows):,} (customer, day) sums in {elapsed:.2f}s")
    return elapsed


def engine_recompute() -> tuple[float, int]:
    out = shell(
        "import time, json\n"
        "from zenskar_site.accounts.actors import system_actor\n"
        "from zenskar_site.accounts.models import Organisation\n"
        "from metrics.models import BillableMetric, MetricValue\n"
        "from metrics.definitions import metric_create\n"
        "from metrics.engine.refresh import metric_recompute\n"
        "from django.db import transaction\n"
        "from unittest import mock\n"
        "org = Organisation.objects.get(name='Bench')\n"
        "with mock.patch('metrics.definitions._recompute_after_commit'):\n"
        "    m = metric_create(actor=system_actor(organisation=org), body={'name': 'CPU', 'slug': 'cpu', "
        "'usage_event': 'compute', 'aggregation': 'sum', 'field': 'cpu_usage_hours', 'granularity': 'day'})\n"
        "started = time.perf_counter()\n"
        "show = lambda d, t: print(f'chunk {d}/{t}', flush=True)\n"
        "metric_recompute(metric_id=m.id, version=m.version, progress=show)\n"
        "print(json.dumps([time.perf_counter() - started, MetricValue.objects.filter(metric=m).count()]))\n"
    )
    elapsed, values = json.loads(out)
    step(f"engine full recompute: {values:,} values stored in {elapsed:.2f}s")
    return float(elapsed), int(values)


def freshness(key: str) -> list[float]:
    """Seconds from a probe's 202 to its value in the metric, under a steady RATE records/s stream."""
    port = 18760
    server = gunicorn("zenskar_site.wsgi:application", port, env())
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "zenskar_site",
            "worker",
            "--beat",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            "--schedule",
            "/tmp/bench-beat-schedule",
        ],
        cwd=ROOT,
        env=env(),
    )
    url = f"http://127.0.0.1:{port}/usage/compute"
    headers = {"x-api-key": key, "Content-Type": "application/json"}
    stop = threading.Event()
    sent = [0]

    def post(records: list[dict[str, Any]]) -> int:
        request = urllib.request.Request(url, data=json.dumps(records).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stream() -> None:
        batch, interval = max(1, RATE // 20), 0.05
        next_at = time.monotonic()
        i = 0
        while not stop.is_set():
            now = dt.datetime.now(dt.UTC).isoformat()
            records = [
                {"customer_id": f"cus_{(i + n) % CUSTOMERS}", "timestamp": now, "data": {"cpu_usage_hours": 0.25}}
                for n in range(batch)
            ]
            if post(records) == 202:
                sent[0] += batch
            i += batch
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    latencies: list[float] = []
    try:
        time.sleep(4)  # the worker and beat start
        threading.Thread(target=stream, daemon=True).start()
        time.sleep(2)
        with psycopg.connect(bench_url(), autocommit=True) as conn:
            deadline = time.monotonic() + FRESHNESS_SECONDS
            n = 0
            started_at = time.monotonic()
            while time.monotonic() < deadline:
                n += 1
                customer = f"probe_{n}"
                status = post(
                    [
                        {
                            "customer_id": customer,
                            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                            "data": {"cpu_usage_hours": 1},
                        }
                    ]
                )
                acknowledged = time.monotonic()
                assert status == 202, status
                while time.monotonic() - acknowledged < 30:
                    row = conn.execute(
                        "SELECT 1 FROM metrics_metricvalue v JOIN metrics_billablemetric m ON m.id = v.metric_id "
                        "WHERE m.slug = 'cpu' AND v.customer_id = %s",
                        [customer],
                    ).fetchone()
                    if row:
                        latencies.append(time.monotonic() - acknowledged)
                        break
                    time.sleep(0.01)
                time.sleep(0.3)
            rate = sent[0] / (time.monotonic() - started_at)
            step(f"stream: {sent[0]:,} records accepted in the window ({rate:,.0f} records/s)")
    finally:
        stop.set()
        worker.terminate()
        server.terminate()
        worker.wait(timeout=30)
        server.wait(timeout=30)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    key, event_id = setup()
    step(f"loading {RECORDS:,} records ({CUSTOMERS} customers, {DAYS} days)")
    load(event_id)
    limit = hand_written_group_by(event_id)
    engine, _ = engine_recompute()
    step(f"freshness at {RATE} records/s for {FRESHNESS_SECONDS}s")
    latencies = freshness(key)
    print()
    print(f"records: {RECORDS:,}   cores: {os.cpu_count()}")
    print(f"hand-written GROUP BY (limit) {RECORDS / limit:12,.0f} records/s  ({limit:.2f}s)")
    print(f"engine full recompute         {RECORDS / engine:12,.0f} records/s  ({engine:.2f}s)")
    print(f"ratio engine / GROUP BY        {limit / engine:6.2f}x   (target >= 0.50x)")
    if latencies:
        print(
            f"freshness over {len(latencies)} probes: p50 {statistics.median(latencies):.2f}s  "
            f"p95 {percentile(latencies, 0.95):.2f}s  max {max(latencies):.2f}s   (target p95 <= 2 s)"
        )
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
