"""Chaos run: production mode under a seeded schedule of crashes and outages; nothing lost, nothing doubled.

    python -m bench.chaos [--seed N] [--records 200000] [--clients 4] [--faults-each 2]

It starts its OWN PostgreSQL cluster and Redis server on free ports (the schedule restarts and stops
them, so it never touches the machine's servers), migrates, and runs the platform as production mode
runs it: gunicorn (`zenskar_site.wsgi:application`, `zenskar_site/gunicorn.conf.py`, DEBUG off, requests
carrying `X-Forwarded-Proto: https` as the TLS proxy would), a Celery worker and a separate beat.
A small supervisor restarts every one of them when it exits, as systemd or Kubernetes would, and counts
the exits it did not cause ("unplanned").

The organisation and API key come from the operators' management commands, the usage event and the
three metrics (a count, a sum grouped by a field, an SQL metric) from the management API.

Clients (separate processes) send every record once with an idempotency key, in batches and single
records, and resend a request until it gets a 2xx. Meanwhile the seeded schedule (printed; the same
seed gives the same schedule) SIGKILLs gunicorn workers and the master, SIGKILLs the Celery worker
(master and pool) while it runs a task, restarts PostgreSQL (fast and immediate shutdowns) and stops
Redis for at least 10 s while the worker is busy, every kind `--faults-each` times, and edits the SQL
metric once. A fault fires when the records acknowledged reach its point of the run; clients are held
back so that no fault fires after the load is over.

At the end it compares the idempotency keys that got a 2xx with the records stored (lost, doubled,
stored without a 2xx), checks the count metric against the records, and runs `reconcile_metrics`
until it reports 0 differences (at most `--reconcile-seconds`), timed from the end of the last fault
or of the load, whichever is later. It prints a summary with PASS or FAIL and exits 1 on FAIL.

A Celery worker or beat that dies on its own is restarted and reported ("worker exits (unplanned)"), not
failed, unless `--fail-on-exits`: a supervisor restarting it is how it is deployed, and the figures show
whether the death cost anything. The run sets METRICS_RECOMPUTE_STALL_SECONDS to 15 (`--stall-seconds`):
a history recompute whose worker was SIGKILLed waits that long for the sweep to restart it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEED = 20261130
FAULT_KINDS = ("gunicorn_worker_kill", "gunicorn_master_kill", "celery_worker_kill", "postgres_restart", "redis_outage")
USAGE_EVENT = "chaos_compute"
CUSTOMERS = 40
REGIONS = ("eu", "us", "ap", "sa")
ORGANISATION = "Chaos Org"
# Client counters, one row of these per client in a shared array.
COUNTERS = (
    "records_2xx",
    "records_sent",
    "records_resent",
    "requests",
    "responses_2xx",
    "retries",
    "status_429",
    "status_503",
    "outside",
    "connection_errors",
    "rejected_items",
    "single_requests",
    "batch_requests",
)
C = {name: index for index, name in enumerate(COUNTERS)}
# Clients may run ahead of the next fault's point by this share of the run, no more.
GATE_LEAD = 0.03


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------------
# The private servers.


def pg_bindir() -> Path:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise SystemExit("chaos needs PostgreSQL's server binaries (initdb, pg_ctl); none found.")
    return candidates[-1].parent


def tools_missing() -> str | None:
    """Why a chaos run cannot start here, or None."""
    try:
        pg_bindir()
    except SystemExit as exc:
        return str(exc)
    if shutil.which("redis-server") is None:
        return "chaos needs redis-server; none found."
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port (PostgreSQL refuses to run as root: run as postgres)."""

    def __init__(self, base: Path) -> None:
        self.bindir = pg_bindir()
        self.dir = base / "pgdata"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check)

    def init(self) -> None:
        self.dir.mkdir()
        if self.as_root:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.dir, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self.start()
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "chaos")

    def _options(self) -> str:
        return f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"

    def start(self) -> None:
        log_file = str(self.dir / "server.log")
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.dir), "-o", self._options(), "-l", log_file, "-w", "start"
        )

    def restart(self, *, mode: str) -> None:
        log_file = str(self.dir / "server.log")
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.dir),
            "-o",
            self._options(),
            "-l",
            log_file,
            "-m",
            mode,
            "-w",
            "restart",
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop", check=False)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/chaos"


class PrivateRedis:
    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.log = base / "logs" / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the private Redis did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


# ---------------------------------------------------------------------------------------------------
# Supervised processes.


@dataclass
class Supervised:
    """One long-running process; the supervisor restarts it whenever it exits."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    planned: int = 0  # exits the harness caused and has not yet seen
    exits_planned: int = 0
    exits_unplanned: int = 0
    unplanned_notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            out.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, seconds: float = 60) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.ready is None or self.ready():
                return True
            time.sleep(0.2)
        return False

    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def children(self) -> list[int]:
        pid = self.pid()
        if pid is None:
            return []
        try:
            return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started (its session), as a machine or container loss."""
        with self.lock:
            process = self.process
            if process is None or process.poll() is not None:
                return
            self.planned += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def kill_leader(self) -> int | None:
        """SIGKILL the process alone (its children live on, orphaned)."""
        with self.lock:
            process = self.process
            if process is None or process.poll() is not None:
                return None
            self.planned += 1
            os.kill(process.pid, signal.SIGKILL)
            return process.pid

    def stop(self) -> None:
        with self.lock:
            process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("      | " + line for line in text[-lines:])


class Supervisor(threading.Thread):
    """Restarts every supervised process that exits; counts the exits the harness did not cause."""

    def __init__(self, processes: list[Supervised]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.running = True
        self.before_restart: dict[str, Callable[[subprocess.Popen[bytes]], None]] = {}

    def run(self) -> None:
        while self.running:
            for item in self.processes:
                with item.lock:
                    process = item.process
                    if process is None or process.poll() is None:
                        continue
                    code = process.returncode
                    if item.planned:
                        item.planned -= 1
                        item.exits_planned += 1
                        unplanned = False
                    else:
                        item.exits_unplanned += 1
                        unplanned = True
                if unplanned:
                    lines = [line.strip(" |") for line in item.tail(40).splitlines()]
                    last = next((line for line in reversed(lines) if line), "")
                    note = f"{item.name} exited on its own (code {code}) at {time.strftime('%H:%M:%S')}: {last}"
                    item.unplanned_notes.append(note)
                    log(f"UNPLANNED EXIT: {note}; last lines of its log:\n{item.tail()}")
                hook = self.before_restart.get(item.name)
                if hook is not None:
                    hook(process)
                if not self.running:
                    return
                time.sleep(0.5)  # a supervisor's restart delay
                with item.lock:
                    if item.process is process and self.running:
                        item.start()
                log(f"supervisor restarted {item.name} (pid {item.pid()})")
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------
# HTTP.


def http_request(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            method,
            path,
            body=body,
            headers={"Host": "127.0.0.1", "X-Forwarded-Proto": "https", "Content-Type": "application/json", **headers},
        )
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def api_until_2xx(port: int, method: str, path: str, body: Any, key: str, outside: list[str]) -> Any:
    """A management API call, resent until it gets a 2xx; answers outside 2xx/429/503 are noted."""
    payload = json.dumps(body).encode() if body is not None else None
    deadline = time.monotonic() + 120
    while True:
        try:
            status, _, data = http_request(port, method, path, payload, {"x-api-key": key})
        except (OSError, http.client.HTTPException):
            status, data = 0, b""
        if 200 <= status < 300:
            return json.loads(data) if data else None
        if status not in (0, 429, 503):
            outside.append(f"{method} {path}: {status} {data[:300]!r}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{method} {path} got no 2xx in 120 s (last {status} {data[:300]!r})")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------------
# Clients: separate processes (spawned, so they share no lock or thread with the harness).


def client_records(*, seed: int, client: int, count: int, base: dt.datetime) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}-records-{client}")
    records = []
    for n in range(count):
        timestamp = base - dt.timedelta(seconds=rng.randrange(0, 3 * 24 * 3600))
        records.append(
            {
                "customer_id": f"cus_{rng.randrange(CUSTOMERS):03d}",
                "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "idempotency_key": f"chaos-{seed}-{client}-{n}",
                "data": {"units": rng.randrange(1, 1000), "region": rng.choice(REGIONS)},
            }
        )
    return records


def client_main(
    *,
    seed: int,
    client: int,
    count: int,
    base_iso: str,
    port: int,
    key: str,
    organisation: str,
    counters: Any,
    gate: Any,
    out_path: str,
) -> None:
    """Send `count` records, each request resent until a 2xx; write the keys that got one to out_path."""
    records = client_records(seed=seed, client=client, count=count, base=dt.datetime.fromisoformat(base_iso))
    rng = random.Random(f"{seed}-requests-{client}")
    row = client * len(COUNTERS)
    acked: list[str] = []
    outside: list[str] = []
    rejected: list[str] = []

    def bump(name: str, by: int = 1) -> None:
        with counters.get_lock():
            counters[row + C[name]] += by

    position = 0
    while position < count:
        while position >= gate.value * count:  # held back until the next fault has fired
            time.sleep(0.02)
        size = 1 if rng.random() < 0.3 else rng.randint(2, 400)
        chunk = records[position : position + size]
        single = len(chunk) == 1
        body = json.dumps(chunk[0] if single else chunk).encode()
        bump("single_requests" if single else "batch_requests")
        bump("records_sent", len(chunk))
        attempt = 0
        while True:
            if attempt:
                bump("retries")
                bump("records_resent", len(chunk))
            attempt += 1
            bump("requests")
            try:
                status, headers, data = http_request(
                    port, "POST", f"/usage/{USAGE_EVENT}", body, {"x-api-key": key, "organisation": organisation}
                )
            except (OSError, http.client.HTTPException):
                bump("connection_errors")
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            if 200 <= status < 300:
                bump("responses_2xx")
                results = json.loads(data)["results"]
                ok = 0
                for item in results:
                    record = chunk[item["index"]]
                    if item["status"] in ("accepted", "duplicate"):
                        acked.append(record["idempotency_key"])
                        ok += 1
                    else:
                        rejected.append(f"{record['idempotency_key']}: {item}")
                bump("records_2xx", ok)
                bump("rejected_items", len(chunk) - ok)
                break
            if status == 429:
                bump("status_429")
            elif status == 503:
                bump("status_503")
            else:
                bump("outside")
                outside.append(f"POST /usage/{USAGE_EVENT}: {status} {data[:300]!r}")
            try:
                wait = float(headers.get("retry-after", "0"))
            except ValueError:
                wait = 0.0
            # Honour Retry-After, but no more than 3 s: the run measures recovery, not patience.
            time.sleep(min(max(wait, 0.05 * 2**attempt), 3.0))
        position += len(chunk)
    Path(out_path).write_text(json.dumps({"acked": acked, "outside": outside, "rejected": rejected}))


# ---------------------------------------------------------------------------------------------------
# The schedule.


@dataclass
class Event:
    at: float  # share of the run's records acknowledged when it fires
    kind: str
    params: dict[str, Any]


def schedule_make(*, seed: int, faults_each: int) -> list[Event]:
    rng = random.Random(seed)
    kinds = [kind for kind in FAULT_KINDS for _ in range(faults_each)]
    rng.shuffle(kinds)
    slots = len(kinds) + 1  # + the metric edit
    edit_slot = rng.randrange(1, slots - 1) if slots > 2 else 0
    width = 0.85 / slots
    events: list[Event] = []
    restart_modes = ["fast", "immediate"]
    rng.shuffle(restart_modes)
    kind_index = 0
    for slot in range(slots):
        at = round(0.04 + slot * width + rng.uniform(0, width * 0.6), 4)
        if slot == edit_slot:
            events.append(Event(at, "metric_edit", {}))
            continue
        kind = kinds[kind_index]
        kind_index += 1
        params: dict[str, Any] = {}
        if kind == "postgres_restart":
            params["mode"] = restart_modes[sum(1 for e in events if e.kind == kind) % 2]
        elif kind == "redis_outage":
            params["seconds"] = round(rng.uniform(10, 14), 1)
        elif kind == "gunicorn_worker_kill":
            params["worker"] = rng.randrange(1000)  # which of the live workers, by rank
        events.append(Event(at, kind, params))
    return events


# ---------------------------------------------------------------------------------------------------
# The run.


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="chaos-"))
        (self.base / "logs").mkdir()
        self.pg = PrivatePostgres(self.base)
        self.redis = PrivateRedis(self.base)
        self.web_port = free_port()
        self.env: dict[str, str] = {}
        self.processes: list[Supervised] = []
        self.supervisor: Supervisor | None = None
        self.faults: Counter[str] = Counter()
        self.fault_log: list[str] = []
        self.mid_task: Counter[str] = Counter()
        self.outside_api: list[str] = []
        self.last_fault_end = 0.0
        self.ingest_end = 0.0
        self.events_under_load = 0
        self.probe: Any = None
        ctx = mp.get_context("spawn")
        self.ctx = ctx
        self.counters = ctx.Array("q", len(COUNTERS) * args.clients)
        self.gate = ctx.Value("d", 0.0)

    # -- setup -------------------------------------------------------------------------------------

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def web_ready(self) -> bool:
        try:
            status, _, _ = http_request(self.web_port, "GET", "/api/v1/schema/", None, {}, timeout=2)
            return status == 200
        except (OSError, http.client.HTTPException):
            return False

    def setup(self) -> tuple[str, str]:
        log(f"work directory {self.base}")
        self.pg.init()
        self.redis.start()
        log(f"private PostgreSQL on 127.0.0.1:{self.pg.port}, private Redis on 127.0.0.1:{self.redis.port}")
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE",)},
            "DATABASE_URL": self.pg.url,
            "REDIS_URL": self.redis.url,
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(60),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CELERY_EAGER": "0",
            "PYTHONUNBUFFERED": "1",
            "BIND": f"127.0.0.1:{self.web_port}",
            "WEB_CONCURRENCY": str(self.args.web_workers),
            "DATA_DIR": str(self.base / "data"),
            # A recompute whose worker was SIGKILLed is restarted by the sweep after this long
            # (the default, 120 s, would dominate the time to converge).
            "METRICS_RECOMPUTE_STALL_SECONDS": str(self.args.stall_seconds),
        }
        log("migrating the private database")
        self.manage("migrate", "--noinput", "-v0")
        out = self.manage(
            "createorganisation", ORGANISATION, "--admin-email", "chaos@example.com", "--password", "x" * 16
        )
        match = re.search(r"\(([0-9a-f-]{36})\)", out)
        if match is None:
            raise RuntimeError(f"createorganisation printed no id: {out!r}")
        organisation = match.group(1)
        key = self.manage("createapikey", "--organisation", ORGANISATION, "--scope", "full").strip().splitlines()[-1]

        python = sys.executable
        web = Supervised(
            "gunicorn",
            [
                python,
                "-m",
                "gunicorn",
                "-c",
                "zenskar_site/gunicorn.conf.py",
                # Its own control socket: the default path is shared by every gunicorn of this user.
                "--control-socket",
                str(self.base / "gunicorn.ctl"),
                "zenskar_site.wsgi:application",
            ],
            self.env,
            self.base / "logs" / "gunicorn.log",
            ready=self.web_ready,
        )
        worker = Supervised(
            "celery worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "zenskar_site",
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={self.args.celery_concurrency}",
                "-n",
                "chaos@%h",
            ],
            self.env,
            self.base / "logs" / "worker.log",
        )
        beat = Supervised(
            "celery beat",
            [
                python,
                "-m",
                "celery",
                "-A",
                "zenskar_site",
                "beat",
                "--loglevel=WARNING",
                "-s",
                str(self.base / "celerybeat-schedule"),
            ],
            self.env,
            self.base / "logs" / "beat.log",
        )
        self.web, self.worker, self.beat = web, worker, beat
        self.processes = [web, worker, beat]
        for item in self.processes:
            item.start()
        if not web.wait_ready(60):
            raise RuntimeError(f"gunicorn did not start:\n{web.tail(20)}")
        self.supervisor = Supervisor(self.processes)
        # A SIGKILLed gunicorn master leaves its workers holding the port until they notice; a process
        # manager would kill the whole group (systemd's KillMode=control-group) before starting again.
        self.supervisor.before_restart["gunicorn"] = self._reap_orphans
        self.supervisor.start()
        self.wait_worker(60)

        log("creating the usage event and the metrics through the management API")

        def api(method: str, path: str, body: Any = None) -> Any:
            return api_until_2xx(self.web_port, method, path, body, key, self.outside_api)

        api(
            "POST",
            "/api/v1/usage-events/",
            {
                "name": "Chaos compute",
                "api_slug": USAGE_EVENT,
                "kind": "event",
                "dataschema": {"data": {"units": "Int64", "region": "String"}},
            },
        )
        api(
            "POST",
            "/api/v1/metrics/",
            {
                "name": "Records",
                "slug": "records",
                "usage_event": USAGE_EVENT,
                "aggregation": "count",
                "granularity": "day",
            },
        )
        api(
            "POST",
            "/api/v1/metrics/",
            {
                "name": "Units by region",
                "slug": "units_by_region",
                "usage_event": USAGE_EVENT,
                "aggregation": "sum",
                "field": "units",
                "group_by": ["region"],
                "granularity": "hour",
            },
        )
        api(
            "POST",
            "/api/v1/metrics/",
            {
                "name": "Big units (SQL)",
                "slug": "big_units",
                "sql": self.sql_metric(threshold=500),
                "granularity": "day",
            },
        )
        self.key, self.organisation = key, organisation
        return key, organisation

    @staticmethod
    def sql_metric(*, threshold: int) -> str:
        return (
            "SELECT customer_id, sum(units) AS quantity "
            f"FROM {USAGE_EVENT} WHERE units >= {threshold} "
            'AND "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }} GROUP BY customer_id'
        )

    def _reap_orphans(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def worker_active(self) -> dict[str, list[dict[str, Any]]] | None:
        """The worker's running tasks (None when it does not answer): asked over the broker, as `celery inspect`."""
        from celery import Celery

        if self.probe is None:
            self.probe = Celery("chaos-probe", broker=self.redis.url)
            self.probe.conf.broker_connection_timeout = 1
            self.probe.conf.broker_transport_options = {
                "socket_connect_timeout": 1,
                "socket_timeout": 2,
                "max_retries": 0,
            }
        try:
            # limit=1: return as soon as the one worker answers.
            answer = self.probe.control.inspect(timeout=1.0, limit=1).active()
        except Exception:
            self.probe.close()
            self.probe = None  # a fresh connection next time (Redis may have restarted)
            answer = None
        return answer

    def wait_worker(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.worker_active() is not None:
                return True
            time.sleep(0.5)
        return False

    def wait_busy_worker(self, seconds: float = 20) -> str | None:
        """Wait until the worker runs a task; return its name (None if it stayed idle)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            answer = self.worker_active() or {}
            for tasks in answer.values():
                if tasks:
                    return str(tasks[0].get("name"))
            time.sleep(0.05)
        return None

    # -- faults ------------------------------------------------------------------------------------

    def fire(self, event: Event) -> None:
        """Strike (logged at that moment), then wait until the service is back; log what happened."""
        kind, note = event.kind, ""
        struck = time.monotonic()

        def strike(what: str) -> None:
            nonlocal struck
            struck = time.monotonic()
            label = "EDIT" if kind == "metric_edit" else "FAULT"
            log(f"{label} {kind} at {self.acked() / self.args.records:.1%}: {what}")

        if kind == "gunicorn_worker_kill":
            workers = sorted(self.web.children())
            if workers:
                victim = workers[event.params["worker"] % len(workers)]
                strike(f"SIGKILL gunicorn worker pid {victim} (of {len(workers)})")
                os.kill(victim, signal.SIGKILL)
                note = f"worker pid {victim} of {len(workers)}"
            else:
                strike("no live gunicorn worker to kill")
                note = "no live worker to kill"
        elif kind == "gunicorn_master_kill":
            strike(f"SIGKILL gunicorn master pid {self.web.pid()}")
            pid = self.web.kill_leader()
            note = f"master pid {pid}"
            self.web.wait_ready(60)
        elif kind == "celery_worker_kill":
            task = self.wait_busy_worker()
            self.mid_task[kind] += task is not None
            busy = f"during {task}" if task else "(idle for 20 s: killed anyway)"
            strike(f"SIGKILL the Celery worker (master and pool) {busy}")
            self.worker.kill_group()
            note = f"master and pool SIGKILLed {busy}"
            self.wait_worker(60)
        elif kind == "postgres_restart":
            mode = event.params["mode"]
            strike(f"pg_ctl restart -m {mode}")
            self.pg.restart(mode=mode)
            note = f"pg_ctl restart -m {mode}"
        elif kind == "redis_outage":
            task = self.wait_busy_worker()
            self.mid_task[kind] += task is not None
            busy = f"the worker busy with {task}" if task else "the worker idle for 20 s"
            strike(f"stop Redis for {event.params['seconds']} s, {busy}")
            self.redis.stop()
            time.sleep(event.params["seconds"])
            self.redis.start()
            note = f"Redis down {time.monotonic() - struck:.1f} s, stopped with {busy}"
        elif kind == "metric_edit":
            strike("PATCH big_units: threshold 500 -> 250")
            api_until_2xx(
                self.web_port,
                "PATCH",
                "/api/v1/metrics/big_units/",
                {"sql": self.sql_metric(threshold=250)},
                self.key,
                self.outside_api,
            )
            note = "big_units: threshold 500 -> 250 (a new version, history recomputed)"
        if kind != "metric_edit":
            self.faults[kind] += 1
            self.last_fault_end = time.monotonic()
        line = f"{kind} (scheduled at {event.at:.1%}): {note}; back after {time.monotonic() - struck:.1f} s"
        self.fault_log.append(line)
        log("  done: " + line)

    # -- counters ----------------------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        values = self.counters[:]
        return {
            name: sum(values[c * len(COUNTERS) + i] for c in range(self.args.clients))
            for i, name in enumerate(COUNTERS)
        }

    def acked(self) -> int:
        return self.totals()["records_2xx"]

    def progress(self, started: float) -> None:
        t = self.totals()
        alive = ", ".join(f"{p.name}:{'up' if p.pid() else 'DOWN'}" for p in self.processes)
        log(
            f"{time.monotonic() - started:6.1f}s  records 2xx {t['records_2xx']:>7}/{self.args.records}  "
            f"requests {t['requests']}  retries {t['retries']}  429 {t['status_429']}  503 {t['status_503']}  "
            f"conn errors {t['connection_errors']}  outside {t['outside']}  "
            f"faults {sum(self.faults.values())}  [{alive}]"
        )

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        schedule = schedule_make(seed=args.seed, faults_each=args.faults_each)
        log(f"seed {args.seed} (repeat with --seed {args.seed}); {args.records} records from {args.clients} clients")
        log("schedule (fires when this share of the records has a 2xx):")
        for event in schedule:
            print(f"    {event.at:6.1%}  {event.kind} {event.params or ''}", flush=True)
        key, organisation = self.setup()
        base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
        per_client = [
            args.records // args.clients + (1 if c < args.records % args.clients else 0) for c in range(args.clients)
        ]
        outs = [self.base / f"client-{c}.json" for c in range(args.clients)]
        self.gate.value = schedule[0].at + GATE_LEAD if schedule else 1.0
        clients = [
            self.ctx.Process(
                target=client_main,
                kwargs={
                    "seed": args.seed,
                    "client": c,
                    "count": per_client[c],
                    "base_iso": base.isoformat(),
                    "port": self.web_port,
                    "key": key,
                    "organisation": organisation,
                    "counters": self.counters,
                    "gate": self.gate,
                    "out_path": str(outs[c]),
                },
            )
            for c in range(args.clients)
        ]
        started = time.monotonic()
        log("clients start")
        for process in clients:
            process.start()
        pending = list(schedule)
        loaded = threading.Event()

        def progress_loop() -> None:
            while not loaded.wait(args.progress_seconds):
                self.progress(started)

        # Its own thread, so that progress shows during a fault too.
        threading.Thread(target=progress_loop, daemon=True).start()
        while any(p.is_alive() for p in clients) or pending:
            if pending and self.acked() >= pending[0].at * args.records:
                event = pending.pop(0)
                under_load = any(p.is_alive() for p in clients)
                # The load goes on during the fault, up to just past the next event's point.
                self.gate.value = (pending[0].at + GATE_LEAD) if pending else 1.0
                self.fire(event)
                self.events_under_load += under_load
                continue
            if pending and not any(p.is_alive() for p in clients):
                raise RuntimeError("clients ended before every fault fired (the gate should prevent this)")
            if not self.ingest_end and not any(p.is_alive() for p in clients):
                self.ingest_end = time.monotonic()
            time.sleep(0.05)
        for process in clients:
            process.join()
        loaded.set()
        if not self.ingest_end:
            self.ingest_end = time.monotonic()
        self.progress(started)
        ingest_seconds = self.ingest_end - started
        log(f"clients done in {ingest_seconds:.1f} s; all faults fired")
        failed_clients = [c for c, p in enumerate(clients) if p.exitcode != 0]
        acked: set[str] = set()
        acked_list: list[str] = []
        outside: list[str] = list(self.outside_api)
        rejected: list[str] = []
        for path in outs:
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            acked_list.extend(data["acked"])
            outside.extend(data["outside"])
            rejected.extend(data["rejected"])
        acked = set(acked_list)
        reconcile = self.reconcile()
        stored = self.stored()
        counts = Counter(stored["keys"])
        lost = sorted(acked - counts.keys())
        doubled = sorted(k for k, n in counts.items() if n > 1)
        extra = sorted(counts.keys() - acked)
        totals = self.totals()
        summary = {
            "seed": args.seed,
            "records": args.records,
            "clients": args.clients,
            "records_sent": totals["records_sent"],
            "records_resent": totals["records_resent"],
            "records_2xx": len(acked),
            "requests": totals["requests"],
            "responses_2xx": totals["responses_2xx"],
            "single_requests": totals["single_requests"],
            "batch_requests": totals["batch_requests"],
            "retries": totals["retries"],
            "status_429": totals["status_429"],
            "status_503": totals["status_503"],
            "connection_errors": totals["connection_errors"],
            "outside_2xx_429_503": totals["outside"] + len(self.outside_api),
            "outside_samples": outside[:10],
            "rejected_items": len(rejected),
            "rejected_samples": rejected[:10],
            "faults": dict(self.faults),
            "faults_mid_task": dict(self.mid_task),
            "events_under_load": self.events_under_load,
            "events": len(schedule),
            "fault_log": self.fault_log,
            "records_stored": len(stored["keys"]),
            "lost": len(lost),
            "lost_samples": lost[:10],
            "doubled": len(doubled) + max(0, stored["count_metric_total"] - len(counts)),
            "doubled_keys": len(doubled),
            "doubled_samples": doubled[:10],
            "stored_without_2xx": len(extra),
            "count_metric_total": stored["count_metric_total"],
            "reconcile_first": reconcile["first"],
            "reconcile_final": reconcile["final"],
            "reconcile_seconds": reconcile["seconds"],
            "reconcile_runs": reconcile["runs"],
            "reconcile_output": reconcile["output"],
            "worker_exits_unplanned": self.worker.exits_unplanned,
            "beat_exits_unplanned": self.beat.exits_unplanned,
            "gunicorn_exits_unplanned": self.web.exits_unplanned,
            "unplanned_notes": self.worker.unplanned_notes + self.beat.unplanned_notes + self.web.unplanned_notes,
            "failed_clients": failed_clients,
            "ingest_seconds": round(ingest_seconds, 1),
            "work_dir": str(self.base),
        }
        return summary

    def stored(self) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(self.pg.url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
            keys = [
                row[0]
                for row in conn.execute(
                    "SELECT r.idempotency_key FROM usage_usagerecord r "
                    "JOIN usage_usageevent e ON e.id = r.usage_event_id WHERE e.api_slug = %s AND NOT r.voided",
                    [USAGE_EVENT],
                )
            ]
            row = conn.execute(
                "SELECT coalesce(sum(v.computed_value::numeric), 0) FROM metrics_metricvalue v "
                "JOIN metrics_billablemetric m ON m.id = v.metric_id WHERE m.slug = 'records' AND NOT v.stale"
            ).fetchone()
        return {"keys": keys, "count_metric_total": int(row[0]) if row else 0}

    def reconcile(self) -> dict[str, Any]:
        """Run reconcile_metrics until it reports 0 differences; the clock starts after the last fault."""
        start = max(self.last_fault_end, self.ingest_end)
        first: int | None = None
        runs = 0
        output = ""
        differences: int | None = None
        while True:
            runs += 1
            result = subprocess.run(
                [sys.executable, "manage.py", "reconcile_metrics"],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
            )
            output = result.stdout + result.stderr
            match = re.search(r"(\d+) difference\(s\)", result.stdout)
            differences = int(match.group(1)) if match else None
            if first is None:
                first = differences
                log(f"reconcile right after the last fault: {differences} difference(s)")
            if differences == 0:
                break
            if time.monotonic() - start > self.args.reconcile_seconds:
                log(f"reconcile still reports {differences} difference(s) after {self.args.reconcile_seconds} s: FAIL")
                break
            time.sleep(1)
        seconds = time.monotonic() - start
        log(f"reconcile: {differences} difference(s) after {seconds:.1f} s ({runs} runs)")
        tail = "\n".join(output.splitlines()[-15:])
        return {"first": first, "final": differences, "seconds": round(seconds, 1), "runs": runs, "output": tail}

    def teardown(self, *, keep: bool) -> None:
        if self.supervisor is not None:
            self.supervisor.running = False
            self.supervisor.join(timeout=5)
        for item in self.processes:
            item.stop()
        self.redis.stop()
        self.pg.stop()
        if keep:
            log(f"kept {self.base} (logs under logs/)")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def verdict(summary: dict[str, Any], *, fail_on_exits: bool = False) -> list[str]:
    """The reasons the run failed (empty: PASS)."""
    reasons = []
    if summary["lost"]:
        reasons.append(f"{summary['lost']} record(s) lost")
    if summary["doubled"]:
        reasons.append(f"{summary['doubled']} record(s) doubled")
    if summary["stored_without_2xx"]:
        reasons.append(f"{summary['stored_without_2xx']} stored record(s) never got a 2xx")
    if summary["count_metric_total"] != summary["records_stored"]:
        reasons.append(f"the count metric says {summary['count_metric_total']}, {summary['records_stored']} stored")
    if summary["reconcile_final"] != 0:
        reasons.append(f"reconcile_metrics still reports {summary['reconcile_final']} difference(s)")
    if summary["outside_2xx_429_503"]:
        reasons.append(f"{summary['outside_2xx_429_503']} answer(s) outside 2xx/429/503")
    if summary["rejected_items"]:
        reasons.append(f"{summary['rejected_items']} record(s) rejected")
    if summary["records_2xx"] != summary["records"]:
        reasons.append(f"{summary['records_2xx']} of {summary['records']} records got a 2xx")
    if fail_on_exits and summary["worker_exits_unplanned"] + summary["beat_exits_unplanned"]:
        reasons.append("the Celery worker or beat exited on its own")
    if summary["failed_clients"]:
        reasons.append(f"client(s) {summary['failed_clients']} crashed")
    return reasons


def report(summary: dict[str, Any], reasons: list[str]) -> None:
    s = summary
    faults = ", ".join(f"{kind} {s['faults'].get(kind, 0)}" for kind in FAULT_KINDS)
    mid = ", ".join(f"{kind} {n}/{s['faults'].get(kind, 0)}" for kind, n in s["faults_mid_task"].items())
    lines = [
        "",
        "=" * 100,
        f"CHAOS SUMMARY  seed {s['seed']}  ({s['records']} records, {s['clients']} clients, "
        f"{s['ingest_seconds']} s of load)",
        f"  records sent:                 {s['records_sent']}  "
        f"({s['batch_requests']} batches, {s['single_requests']} single records; "
        f"{s['records_resent']} more sent again in retries)",
        f"  records with a 2xx:           {s['records_2xx']}  "
        f"(requests {s['requests']}, 2xx responses {s['responses_2xx']})",
        f"  retries:                      {s['retries']}  (429: {s['status_429']}, 503: {s['status_503']}, "
        f"connection errors/resets: {s['connection_errors']})",
        f"  faults by kind:               {faults}",
        f"  faults with the worker busy:  {mid or '-'}",
        "  events, in order:",
        *(f"    - {line}" for line in s["fault_log"]),
        f"  events under client load:     {s['events_under_load']}/{s['events']}",
        "  metric edited mid-run:        big_units (SQL)",
        f"  records stored:               {s['records_stored']}  (count metric total {s['count_metric_total']})",
        f"  records lost (2xx, not stored): {s['lost']}",
        f"  records doubled:              {s['doubled']}  (keys stored twice: {s['doubled_keys']})",
        f"  stored without a 2xx:         {s['stored_without_2xx']}",
        f"  reconcile after last fault:   {s['reconcile_first']} difference(s) at the first run, "
        f"{s['reconcile_final']} at the last; {s['reconcile_seconds']} s until a run reported 0 "
        f"({s['reconcile_runs']} runs)",
        f"  answers outside 2xx/429/503:  {s['outside_2xx_429_503']}",
        f"  rejected records:             {s['rejected_items']}",
        f"  worker exits (unplanned):     {s['worker_exits_unplanned']}",
        f"  beat exits (unplanned):       {s['beat_exits_unplanned']}",
        f"  gunicorn exits (unplanned):   {s['gunicorn_exits_unplanned']}",
    ]
    for note in s["unplanned_notes"]:
        lines.append(f"    - {note}")
    for sample in s["outside_samples"]:
        lines.append(f"    outside: {sample}")
    for sample in s["lost_samples"]:
        lines.append(f"    lost: {sample}")
    for sample in s["rejected_samples"]:
        lines.append(f"    rejected: {sample}")
    if s["reconcile_final"] != 0:
        lines.append("  reconcile_metrics' last output:")
        lines.extend("    " + line for line in s["reconcile_output"].splitlines())
    lines.append(("PASS" if not reasons else "FAIL: " + "; ".join(reasons)) + f"  (seed {s['seed']})")
    lines.append("=" * 100)
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"schedule and records seed (default {DEFAULT_SEED})"
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--faults-each", type=int, default=2, help="how many times each kind of fault fires")
    parser.add_argument("--reconcile-seconds", type=float, default=120.0, help="give up (FAIL) after this long")
    parser.add_argument("--stall-seconds", type=float, default=15.0, help="METRICS_RECOMPUTE_STALL_SECONDS for the run")
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--progress-seconds", type=float, default=5.0)
    parser.add_argument("--fail-on-exits", action="store_true", help="FAIL when the worker or beat dies on its own")
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, database) at the end")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.records < args.clients or args.faults_each < 1:
        parser.error("need --clients >= 1, --records >= --clients and --faults-each >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = tools_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    chaos = Chaos(args)
    summary: dict[str, Any] | None = None
    try:
        summary = chaos.run()
    finally:
        reasons = verdict(summary, fail_on_exits=args.fail_on_exits) if summary else ["the run did not finish"]
        chaos.teardown(keep=args.keep or bool(reasons))
    report(summary, reasons)
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "pass": not reasons, "reasons": reasons}, indent=2))
    return 0 if not reasons else 1


if __name__ == "__main__":
    sys.exit(main())
