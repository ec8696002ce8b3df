"""Ingestion benchmark on PostgreSQL, against the machine's own limits in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.ingest

1. the limit: raw COPY of the same records (1,000-row batches, one commit each, as the endpoint
   commits per request) into a scratch table with the records table's indexes and unique constraint;
2. the batch endpoint: 1,000-record batches from several concurrent clients (wrk), under gunicorn
   as production mode runs it;
3. the single-record endpoint (wrk);
4. a bare WSGI app under the same gunicorn settings: the HTTP limit. Phases 3 and 4 take turns in
   short slices, so a drift in the machine's speed (this is a shared VM) weighs on both alike.
Every phase starts after VACUUM ANALYZE and a CHECKPOINT, so no phase pays for the previous one's rows.
It prints records/s, requests/s and the two ratios the ingestion issue names.
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
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = "bench_ingest"
BATCH = 1000
COPY_RECORDS = 200_000
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CLIENT_CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
SLICES = 5
BENCH_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
WORKERS = os.environ.get("WEB_CONCURRENCY", str((os.cpu_count() or 2) + 1))


def admin_url() -> str:
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    return url.replace("postgres://", "postgresql://", 1)


def bench_url() -> str:
    return admin_url().rsplit("/", 1)[0] + "/" + BENCH_DB


def env() -> dict[str, str]:
    # As production runs it: Redis as the broker (the metric refreshes are queued there; the
    # benchmark measures the web tier, workers would run elsewhere).
    return {
        **os.environ,
        "REDIS_URL": BENCH_REDIS,
        "DATABASE_URL": bench_url().replace("postgresql://", "postgres://", 1),
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "INGEST_RATE_LIMIT": "0",
        "CELERY_EAGER": "0",
    }


def step(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def setup() -> tuple[str, str]:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    step("migrating the benchmark database")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True)
    script = (
        "from zenskar_site.accounts.services import organisation_create, api_key_create\n"
        "from zenskar_site.accounts.actors import system_actor\n"
        "from usage.services import usage_event_create\n"
        "org, _ = organisation_create(name='Bench', admin_email='bench@example.com', password='bench-password')\n"
        "actor = system_actor(organisation=org)\n"
        "usage_event_create(actor=actor, name='Compute', api_slug='compute', dataschema="
        "{'data': {'cpu_usage_hours': 'Float64', 'region': 'Nullable(String)'}})\n"
        "_, key = api_key_create(actor=actor, name='bench', scope='full')\n"
        "print(key)\n"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1], "compute"


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


def copy_limit(event_id: int) -> float:
    """Records/s of raw COPY, 1,000 rows a transaction, into a clone of the records table."""
    rows = records(COPY_RECORDS, prefix="copy")
    with psycopg.connect(bench_url()) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (LIKE usage_usagerecord INCLUDING ALL)")
        conn.commit()
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
        columns = (
            "usage_event_id, customer_id, timestamp, period_start, data, idempotency_key, content_hash, "
            "received_at, voided, superseded"
        )
        started = time.perf_counter()
        for payload in payloads:
            with conn.cursor() as cur, cur.copy(f"COPY bench_copy ({columns}) FROM STDIN") as copy:
                copy.write(payload)
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
        conn.commit()
    return COPY_RECORDS / elapsed


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
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/schema/", timeout=2)
            return process
        except urllib.error.HTTPError:
            return process  # answering (the bare app answers 202 to anything; errors are fine here)
        except Exception:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"gunicorn {app} did not start") from None
            time.sleep(0.2)


def wrk(
    url: str, body: bytes, key: str, *, connections: int, seconds: float = DURATION
) -> tuple[float, dict[int, int]]:
    """Requests/s for POSTing `body`, and the status codes seen (wrk's Lua tallies them)."""
    with tempfile.TemporaryDirectory() as folder:
        body_file = Path(folder) / "body.json"
        body_file.write_bytes(body)
        script = Path(folder) / "post.lua"
        script.write_text(
            f"""
local f = io.open("{body_file}", "rb"); local body = f:read("*all"); f:close()
wrk.method = "POST"; wrk.body = body
wrk.headers["Content-Type"] = "application/json"; wrk.headers["x-api-key"] = "{key}"
codes = {{}}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {{}} end
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
    key, slug = setup()
    with psycopg.connect(bench_url()) as conn:
        event_id = int(conn.execute("SELECT id FROM usage_usageevent WHERE api_slug = %s", [slug]).fetchone()[0])  # type: ignore[index]

    step(f"raw COPY limit: {COPY_RECORDS:,} records in {BATCH:,}-row transactions")
    settle()
    copy_rate = copy_limit(event_id)

    # Batches carry no idempotency keys here so wrk can resend one body; keyed batches are measured
    # by the tests for correctness, and the ON CONFLICT path costs the same when keys are new.
    batch = records(BATCH, prefix="unused")
    for r in batch:
        r.pop("idempotency_key")
    batch_body = json.dumps(batch).encode()
    single_body = json.dumps(batch[0]).encode()

    port = 18700
    server = gunicorn("zenskar_site.wsgi:application", port)
    try:
        step(f"batch endpoint: {CLIENT_CONNECTIONS} connections x {BATCH:,}-record batches for {DURATION}s")
        settle()
        before = stored_records()
        batch_rps, batch_codes = wrk(
            f"http://127.0.0.1:{port}/usage/{slug}", batch_body, key, connections=CLIENT_CONNECTIONS
        )
        time.sleep(3)  # requests wrk left in flight finish before the next phase is measured
        batch_stored = stored_records() - before
        bare = gunicorn("bench.bare_wsgi:application", port + 1)
        try:
            # The single-record endpoint and the bare app take turns in short slices, so a change in the
            # machine's speed during the run (a shared VM's neighbours) weighs on both sides of the ratio alike.
            step(
                f"single-record endpoint and bare WSGI app (same gunicorn settings), {CLIENT_CONNECTIONS * 2} "
                f"connections, taking turns in {SLICES} slices of {DURATION / SLICES:g}s each"
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
                        url, single_body, key, connections=CLIENT_CONNECTIONS * 2, seconds=DURATION / SLICES
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
    print()
    print(f"gunicorn workers: {WORKERS}   cores: {os.cpu_count()}   duration per phase: {DURATION}s")
    print(f"raw COPY (limit)           {copy_rate:12,.0f} records/s")
    print(
        f"batch endpoint             {batch_records:12,.0f} records/s  ({batch_rps:,.1f} requests/s; "
        f"statuses {batch_codes}; stored {batch_stored:,})"
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
    print(f"ratio batch / COPY          {batch_records / copy_rate:6.2f}x   (target >= 0.50x)")
    print(f"ratio single / bare WSGI    {single_rps / bare_rps:6.2f}x   (target >= 0.25x)")
    ok = set(batch_codes) == {202} and set(single_codes) == {202}
    if not ok:
        print("WARNING: some requests were not accepted; see the statuses above.")
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    import redis

    redis.Redis.from_url(BENCH_REDIS).flushdb()  # the queued refreshes of a database that is gone
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
