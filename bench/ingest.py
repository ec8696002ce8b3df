"""Ingestion benchmark on PostgreSQL, against the machine's own limits in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.ingest

1. the limit: raw COPY of the same records, idempotency keys included (1,000-row batches, one
   commit each, as the endpoint commits per request), into a scratch table with the records table's
   indexes and unique constraints, from 1, 2 and 4 parallel connections; the best of the three is
   the baseline, since the endpoint too writes from several connections at once;
2. the batch endpoint: 1,000-record batches, every record with its own idempotency key, from several
   concurrent clients (wrk), under gunicorn as production mode runs it. Phases 1 and 2 take turns in
   slices, so both are measured under the same machine speed;
3. the single-record endpoint (wrk), each record with its own idempotency key;
4. a bare WSGI app under the same gunicorn settings: the HTTP limit. Phases 3 and 4 take turns in
   short slices, so a drift in the machine's speed (this is a shared VM) weighs on both alike.
The endpoint runs as production does: the rate limiter on at its production default
(INGEST_RATE_LIMIT, counted in Redis). That default is a per-organisation budget (1,000 requests/s),
and one 2-core machine serves more single-record requests than that, so the load comes from
ORGANISATIONS tenants, each with its own key and usage event, as a real deployment's load does: the
limiter's cost (one Redis round trip per request) is measured, and its budget is not what is
measured. A 429 (or any status but 202) fails the run.
Each slice of phases 1 and 2, and phases 3 and 4, start after VACUUM ANALYZE and a CHECKPOINT, so none
pays for the rows written before it.
It prints records/s, requests/s and the two ratios the ingestion issue names, each with PASS or FAIL
against its target; the exit status is 1 when any line fails.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
# BENCH_DB_PREFIX and BENCH_PORT keep runs that share a machine apart (their own database and ports).
BENCH_DB = os.environ.get("BENCH_DB_PREFIX", "") + "bench_ingest"
BATCH = 1000
COPY_RECORDS = int(os.environ.get("BENCH_COPY_RECORDS", "200000"))
COPY_CONNECTIONS = (1, 2, 4)
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CLIENT_CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
# Tenants sharing the load: each stays far under its rate limit even on a machine several times faster.
ORGANISATIONS = int(os.environ.get("BENCH_ORGANISATIONS", "8"))
SLICES = 5
# A batch request takes a good part of a second: a slice this long keeps the requests wrk cuts off when it
# stops (it counts only those it saw answered) a small share of those it counts.
BATCH_SLICE_SECONDS = float(os.environ.get("BENCH_BATCH_SLICE_SECONDS", "4"))
BENCH_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
WORKERS = os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 2) + 1))  # gunicorn.conf.py's default
BATCH_TARGET = 0.5
SINGLE_TARGET = 0.25
# The placeholder each request's Lua replaces with its own prefix, so every idempotency key is new.
KEY_PLACEHOLDER = "KEYPREFIX"


def admin_url() -> str:
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    return url.replace("postgres://", "postgresql://", 1)


def bench_url() -> str:
    return admin_url().rsplit("/", 1)[0] + "/" + BENCH_DB


def env() -> dict[str, str]:
    # As production runs it: Redis as the broker (the metric refreshes are queued there; the
    # benchmark measures the web tier, workers would run elsewhere) and as the rate limiter's store,
    # the limiter at its production default (INGEST_RATE_LIMIT is left unset).
    environment = {
        **os.environ,
        "REDIS_URL": BENCH_REDIS,
        "DATABASE_URL": bench_url().replace("postgresql://", "postgres://", 1),
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "CELERY_EAGER": "0",
    }
    environment.pop("INGEST_RATE_LIMIT", None)
    return environment


def step(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def rate_limit_default() -> int:
    """INGEST_RATE_LIMIT as the benchmark's processes read it (the production default)."""
    out = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.INGEST_RATE_LIMIT)",
        ],
        cwd=ROOT,
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def setup() -> tuple[list[str], str]:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    step("migrating the benchmark database")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True)
    script = (
        "from zenskar_site.accounts.services import organisation_create, api_key_create\n"
        "from zenskar_site.accounts.actors import system_actor\n"
        "from usage.services import usage_event_create\n"
        f"for n in range({ORGANISATIONS}):\n"
        "    org, _ = organisation_create(name=f'Bench {n}', admin_email=f'bench{n}@example.com', "
        "password='bench-password')\n"
        "    actor = system_actor(organisation=org)\n"
        "    usage_event_create(actor=actor, name='Compute', api_slug='compute', dataschema="
        "{'data': {'cpu_usage_hours': 'Float64', 'region': 'Nullable(String)'}})\n"
        "    _, key = api_key_create(actor=actor, name='bench', scope='full')\n"
        "    print(key)\n"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-ORGANISATIONS:], "compute"


def records(n: int, *, prefix: str) -> list[dict[str, object]]:
    base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return [
        {
            "customer_id": f"cus_{i % 500}",
            "timestamp": (base + dt.timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
            "data": {"cpu_usage_hours": (i % 97) / 4, "region": "eu-west-1" if i % 2 else None},
            "idempotency_key": f"{prefix}-{i}",
        }
        for i in range(n)
    ]


COPY_COLUMNS = (
    "usage_event_id, customer_id, timestamp, period_start, data, idempotency_key, content_hash, "
    "received_at, voided, superseded"
)


def copy_payloads(event_id: int, *, prefix: str) -> list[str]:
    """COPY_RECORDS records as 1,000-row COPY payloads, each record with its own idempotency key."""
    rows = records(COPY_RECORDS, prefix=prefix)
    now = dt.datetime.now(dt.UTC)
    payloads = []
    for start in range(0, len(rows), BATCH):
        buffer = io.StringIO()
        for r in rows[start : start + BATCH]:
            data = json.dumps({k: v for k, v in r["data"].items() if v is not None})  # type: ignore[attr-defined]
            buffer.write(
                f"{event_id}\t{r['customer_id']}\t{r['timestamp']}\t\\N\t{data}\t{r['idempotency_key']}\t"
                f"{'0' * 64}\t{now.isoformat()}\tf\tf\n"
            )
        payloads.append(buffer.getvalue())
    return payloads


class CopyLimit:
    """Raw COPY, 1,000 rows a transaction, from `connections` connections at once, into a clone of the
    records table (its indexes, the idempotency key's unique index included), a slice at a time: the
    table is made once and grows over the slices, as the endpoint's does."""

    def __init__(self, event_id: int, *, connections: int) -> None:
        self.connections = connections
        self.table = f"bench_copy_{connections}"
        payloads = copy_payloads(event_id, prefix=f"copy{connections}")
        # Slice n takes every SLICES-th payload from n: each slice copies the same number of rows.
        self.slices = [payloads[n::SLICES] for n in range(SLICES)]
        self.records = 0
        self.seconds = 0.0
        with psycopg.connect(bench_url(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            conn.execute(f"CREATE TABLE {self.table} (LIKE usage_usagerecord INCLUDING ALL)")

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def run(self, n: int) -> None:
        """Copy slice n, its payloads shared out between the connections, and add its rows and time."""
        shares = [self.slices[n][c :: self.connections] for c in range(self.connections)]
        opened = [psycopg.connect(bench_url()) for _ in range(self.connections)]
        errors: list[BaseException] = []
        start = threading.Barrier(self.connections + 1)

        def run(conn: psycopg.Connection[tuple[object, ...]], share: list[str]) -> None:
            try:
                start.wait()
                for payload in share:
                    with conn.cursor() as cur, cur.copy(f"COPY {self.table} ({COPY_COLUMNS}) FROM STDIN") as copy:
                        copy.write(payload)
                    conn.commit()
            except BaseException as exc:  # reported below: a failed baseline must not pass as a fast one
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c, s)) for c, s in zip(opened, shares, strict=True)]
        for thread in threads:
            thread.start()
        start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        self.seconds += time.perf_counter() - started
        for conn in opened:
            conn.close()
        if errors:
            raise RuntimeError(f"COPY failed: {errors[0]!r}")
        self.records += sum(payload.count("\n") for payload in self.slices[n])

    def finish(self) -> None:
        """Check that every row was stored, and drop the table."""
        with psycopg.connect(bench_url(), autocommit=True) as conn:
            stored = int(conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])  # type: ignore[index]
            conn.execute(f"DROP TABLE {self.table}")
        if stored != self.records or stored != COPY_RECORDS:
            raise RuntimeError(f"COPY stored {stored:,} records of {COPY_RECORDS:,}")


def gunicorn(app: str, port: int, environment: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            "-c",
            "zenskar_site/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            WORKERS,
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=environment or env(),
    )
    # Ready once it answers anything: a path no app serves (the schema took longer than the probe's
    # timeout to generate on a busy machine, so gunicorn was taken for not started).
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bench-ready", timeout=5)
            return process
        except urllib.error.HTTPError:
            return process  # answering (the bare app answers 202 to anything; errors are fine here)
        except Exception:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"gunicorn {app} did not start") from None
            time.sleep(0.2)


_runs = [0]


def wrk(
    url: str, template: bytes, keys: list[str], *, connections: int, seconds: float = DURATION
) -> tuple[float, dict[int, int]]:
    """Requests/s for POSTing `template`, and the status codes seen (wrk's Lua tallies them).

    Each request replaces KEY_PLACEHOLDER in the template with a prefix of its own (run, thread,
    request), so every idempotency key it sends is new, and takes the next API key of `keys` in turn.
    """
    _runs[0] += 1
    run_id = f"r{os.getpid()}x{_runs[0]}"
    with tempfile.TemporaryDirectory() as folder:
        body_file = Path(folder) / "body.json"
        body_file.write_bytes(template)
        script = Path(folder) / "post.lua"
        script.write_text(
            f"""
local f = io.open("{body_file}", "rb"); local template = f:read("*all"); f:close()
local keys = {{{", ".join(json.dumps(k) for k in keys)}}}
local sent = 0
codes = {{}}
local threads = {{}}
function setup(thread) table.insert(threads, thread); thread:set("tid", #threads) end
function init(args) codes = {{}} end
function request()
  sent = sent + 1
  local body = template:gsub("{KEY_PLACEHOLDER}", "{run_id}-" .. tid .. "-" .. sent)
  local headers = {{["Content-Type"] = "application/json", ["x-api-key"] = keys[sent % #keys + 1]}}
  return wrk.format("POST", nil, headers, body)
end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  local all = {{}}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do all[k] = (all[k] or 0) + v end
  end
  for k, v in pairs(all) do io.write(string.format("status %d %d\\n", k, v)) end
end
"""
        )
        threads = min(2, connections)
        run = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "-s", str(script), url],
            check=False,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise RuntimeError(f"wrk failed: {run.stdout}\n{run.stderr}")
        out = run.stdout
    rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    codes = {int(p[1]): int(p[2]) for p in (line.split() for line in out.splitlines()) if p and p[0] == "status"}
    return rate, codes


def settle() -> None:
    """Start each phase from the same server state: the previous phase's rows vacuumed and analysed
    (so autovacuum does not run during the next phase) and its WAL flushed by a checkpoint."""
    with psycopg.connect(bench_url(), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def stored_records() -> int:
    with psycopg.connect(bench_url()) as conn:
        return int(conn.execute("SELECT count(*) FROM usage_usagerecord").fetchone()[0])  # type: ignore[index]


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed (make bench installs Debian's wrk).", file=sys.stderr)
        return 2
    # The benchmark's own Redis database: what an earlier run left queued must not load this one.
    redis.Redis.from_url(BENCH_REDIS).flushdb()
    keys, slug = setup()
    limit = rate_limit_default()
    with psycopg.connect(bench_url()) as conn:
        event_id = int(conn.execute("SELECT min(id) FROM usage_usageevent WHERE api_slug = %s", [slug]).fetchone()[0])  # type: ignore[index]

    step(f"preparing the raw COPY limit's {COPY_RECORDS:,} keyed records for each of {COPY_CONNECTIONS} connection(s)")
    copies = [CopyLimit(event_id, connections=connections) for connections in COPY_CONNECTIONS]

    batch_body = json.dumps(records(BATCH, prefix=KEY_PLACEHOLDER)).encode()
    single_body = json.dumps(records(1, prefix=KEY_PLACEHOLDER)[0]).encode()

    port = int(os.environ.get("BENCH_PORT", "18700"))
    server = gunicorn("zenskar_site.wsgi:application", port)
    try:
        # The batch endpoint and raw COPY (1, 2 and 4 connections) take turns in slices too: the limit and
        # the endpoint are measured under the same machine speed, each slice from a checkpointed state.
        step(
            f"batch endpoint: {CLIENT_CONNECTIONS} connections x {BATCH:,}-record keyed batches, {ORGANISATIONS} "
            f"organisations, rate limit {limit}/s each; and raw COPY of {COPY_RECORDS:,} keyed records in "
            f"{BATCH:,}-row transactions from {COPY_CONNECTIONS} connection(s); taking turns in {SLICES} slices "
            f"({BATCH_SLICE_SECONDS:g}s of the endpoint each)"
        )
        before = stored_records()
        batch_rates: list[float] = []
        batch_codes = Counter[int]()
        for n in range(SLICES):
            for copy in copies:
                settle()
                copy.run(n)
            settle()
            rate, codes = wrk(
                f"http://127.0.0.1:{port}/usage/{slug}",
                batch_body,
                keys,
                connections=CLIENT_CONNECTIONS,
                seconds=BATCH_SLICE_SECONDS,
            )
            batch_rates.append(rate)
            batch_codes.update(codes)
            time.sleep(1)  # requests wrk left in flight finish before the next slice is measured
        time.sleep(2)
        batch_stored = stored_records() - before
        batch_rps = sum(batch_rates) / SLICES
        for copy in copies:
            copy.finish()
        copy_rates = {copy.connections: copy.rate for copy in copies}
        copy_connections, copy_rate = max(copy_rates.items(), key=lambda item: item[1])
        bare = gunicorn("bench.bare_wsgi:application", port + 1)
        try:
            # The single-record endpoint and the bare app take turns in short slices, so a change in the
            # machine's speed during the run (a shared VM's neighbours) weighs on both sides of the ratio alike.
            step(
                f"single-record endpoint and bare WSGI app (same gunicorn settings, same client script), "
                f"{CLIENT_CONNECTIONS * 2} connections, taking turns in {SLICES} slices of {DURATION / SLICES:g}s each"
            )
            settle()
            before = stored_records()
            single_rates: list[float] = []
            bare_rates: list[float] = []
            single_codes = Counter[int]()
            turns = (
                (f"http://127.0.0.1:{port}/usage/{slug}", single_rates),
                (f"http://127.0.0.1:{port + 1}/", bare_rates),
            )
            for _ in range(SLICES):
                for url, rates in turns:
                    rate, codes = wrk(
                        url, single_body, keys, connections=CLIENT_CONNECTIONS * 2, seconds=DURATION / SLICES
                    )
                    rates.append(rate)
                    if rates is single_rates:
                        single_codes.update(codes)
            time.sleep(3)
            single_stored = stored_records() - before
        finally:
            bare.terminate()
            bare.wait(timeout=20)
    finally:
        server.terminate()
        server.wait(timeout=20)
    single_rps, bare_rps = sum(single_rates) / SLICES, sum(bare_rates) / SLICES

    batch_records = batch_rps * BATCH
    batch_ratio, single_ratio = batch_records / copy_rate, single_rps / bare_rps
    # Every answer a 202 (no 429 from the limiter, no error) and every accepted record stored (requests
    # still in flight when wrk stopped may add a few it did not count).
    batch_ok = set(batch_codes) == {202} and batch_stored >= batch_codes[202] * BATCH
    single_ok = set(single_codes) == {202} and single_stored >= single_codes.get(202, 0)
    lines = [
        (
            f"ratio batch / fair COPY     {batch_ratio:6.2f}x   (target >= {BATCH_TARGET:.2f}x)",
            batch_ratio >= BATCH_TARGET,
        ),
        (
            f"ratio single / bare WSGI    {single_ratio:6.2f}x   (target >= {SINGLE_TARGET:.2f}x)",
            single_ratio >= SINGLE_TARGET,
        ),
        (f"batch answers all 202, every record stored (statuses {dict(batch_codes)})", batch_ok),
        (f"single answers all 202, every record stored (statuses {dict(single_codes)})", single_ok),
    ]
    print()
    print(
        f"gunicorn workers: {WORKERS}   cores: {os.cpu_count()}   duration per phase: {DURATION}s   "
        f"organisations: {ORGANISATIONS}   INGEST_RATE_LIMIT: {limit}/s per organisation"
    )
    for connections, rate in copy_rates.items():
        print(f"raw COPY, {connections} connection(s)     {rate:12,.0f} records/s")
    print(f"fair COPY (best: {copy_connections})        {copy_rate:12,.0f} records/s")
    batch_slices = ", ".join(f"{r * BATCH:,.0f}" for r in batch_rates)
    print(
        f"batch endpoint             {batch_records:12,.0f} records/s  ({batch_rps:,.1f} requests/s; "
        f"statuses {dict(batch_codes)}; stored {batch_stored:,}; slices {batch_slices})"
    )
    print(
        f"single-record endpoint     {single_rps:12,.0f} requests/s (statuses {dict(single_codes)}; "
        f"stored {single_stored:,}; slices {', '.join(f'{r:,.0f}' for r in single_rates)})"
    )
    print(
        f"bare WSGI app (HTTP limit) {bare_rps:12,.0f} requests/s (slices {', '.join(f'{r:,.0f}' for r in bare_rates)})"
    )
    print(
        "ratio per slice             "
        + ", ".join(f"{s / b:.2f}x" for s, b in zip(single_rates, bare_rates, strict=True))
    )
    for text, ok in lines:
        print(f"{verdict(ok)}  {text}")
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    redis.Redis.from_url(BENCH_REDIS).flushdb()  # the queued refreshes of a database that is gone
    return 0 if all(ok for _, ok in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
