"""Real processes for tests: a gunicorn web server and a Celery worker on the test database."""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database pytest-django created, for processes outside this one."""
    db = connection.settings_dict
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"DATABASE_URL": test_database_url(), "DEBUG": "1", "CELERY_EAGER": "0", "PYTHONUNBUFFERED": "1"})
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra)
    return env


@contextmanager
def gunicorn_server(*, workers: int = 2, threads: int = 4, **env: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "zenskar_site.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "2",
        ],
        cwd=ROOT,
        env=process_env(**env),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Generous: generating the schema takes seconds on a busy shared machine.
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/v1/schema/", timeout=10)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def celery_worker(**env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process consuming from Redis, on the test database."""
    with _celery_worker_process(["--pool=solo"], env=env, stop_seconds=10) as process:
        yield process


@contextmanager
def _celery_worker_process(
    args: list[str], *, env: dict[str, str], stop_seconds: float
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A zenskar_site worker ARGS` on the test database, once it answers a ping; stopped after."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "zenskar_site",
            "worker",
            *args,
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=process_env(**env),
    )
    try:
        from zenskar_site.celery import app

        deadline = time.monotonic() + 30
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the Celery worker did not start")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_seconds)
        except subprocess.TimeoutExpired:
            process.kill()


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


# --- Production mode: what a deployment runs, behind a TLS-terminating proxy ---

PRODUCTION_HOST = "metering.example.com"
# One secret for every process of a test run, as one deployment shares it.
PRODUCTION_SECRET_KEY = secrets.token_urlsafe(64)


def production_env(**extra: str) -> dict[str, str]:
    """The settings a production deployment sets (README, `manage.py check --deploy` clean): DEBUG off, a
    real secret, the public host name; HTTPS redirect, HSTS and secure cookies are production's defaults.
    To be passed to process_env (through gunicorn_production_server, celery_worker, celery_beat)."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": PRODUCTION_SECRET_KEY,
        "ALLOWED_HOSTS": PRODUCTION_HOST,
        "CELERY_EAGER": "0",
        **extra,
    }


def https_request(
    url: str,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    via_proxy: bool = True,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One request to a web process as the TLS-terminating proxy forwards it: the public Host and, when
    `via_proxy`, `X-Forwarded-Proto: https` (without it, the request is what plain HTTP looks like).
    Redirects are returned, not followed. Header names are lower-cased in the answer."""
    parsed = urllib.parse.urlsplit(url)
    sent = {"Host": PRODUCTION_HOST, **({"X-Forwarded-Proto": "https"} if via_proxy else {}), **(headers or {})}
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=sent)
        response = connection.getresponse()
        answer_headers: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            answer_headers[key] = f"{answer_headers[key]}\n{value}" if key in answer_headers else value
        return response.status, answer_headers, response.read()
    finally:
        connection.close()


@contextmanager
def _stopped_at_exit(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def gunicorn_production_server(*, workers: int = 2, threads: int = 4, **env: str) -> Iterator[str]:
    """`zenskar_site.wsgi` under gunicorn in production mode (production_env, overridden by `env`).

    Ready when it answers the OpenAPI document over HTTPS as the proxy forwards it: plain HTTP would be
    redirected, which the probe of gunicorn_server cannot follow.
    """
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "zenskar_site.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "2",
        ],
        cwd=ROOT,
        env=process_env(**production_env(**env)),
    )
    url = f"http://127.0.0.1:{port}"
    with _stopped_at_exit(process):
        deadline = time.monotonic() + 30
        while True:
            try:
                if https_request(url, "GET", "/api/v1/schema/", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("gunicorn did not start in production mode")
            time.sleep(0.2)
        yield url


@contextmanager
def celery_beat(**env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery beat process sending settings.CELERY_BEAT_SCHEDULE's tasks to Redis (its schedule
    file in a temporary folder, so no state is shared between runs)."""
    folder = Path(tempfile.mkdtemp(prefix="celerybeat-"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "zenskar_site",
            "beat",
            "--schedule",
            str(folder / "schedule"),
            "--pidfile=",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=process_env(**env),
    )
    try:
        with _stopped_at_exit(process):
            time.sleep(0.5)
            if process.poll() is not None:
                raise RuntimeError("Celery beat did not start")
            yield process
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may stop and start again.

    Never the shared server on 6379: other people's tests run on it. No persistence, like a Redis that
    lost its data: whatever was queued when it stops is gone, as in the worst real outage.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the private redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@contextmanager
def celery_app_on_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (what `.delay()`, `control.ping()` and `purge()` use) and
    settings.REDIS_URL (what `process_env` hands to workers and web servers) at `url`, then back."""
    from kombu import pools as kombu_pools

    from zenskar_site.celery import app

    def forget_connections() -> None:
        # kombu keeps its pools in a process-wide registry keyed by connection: closing only the app's
        # pool left a closed pool there, which the app took back once its URL was restored ("Acquire on
        # closed pool" in every later test that enqueued). reset() closes them and empties the registry.
        kombu_pools.reset()
        app._pool = None
        app.amqp._producer_pool = None
        # The result backend (AsyncResult.get) is built again from the new URL.
        app._backend_cache = None
        if hasattr(app._local, "backend"):
            del app._local.backend

    saved = (app.conf.broker_url, app.conf.result_backend, app.conf.broker_transport, settings.REDIS_URL)
    forget_connections()
    app.conf.broker_url = url
    app.conf.result_backend = url
    app.conf.broker_transport = "zenskar_site.broker:Transport"
    settings.REDIS_URL = url
    try:
        yield
    finally:
        forget_connections()
        app.conf.broker_url, app.conf.result_backend, app.conf.broker_transport, settings.REDIS_URL = saved


@contextmanager
def celery_process(*args: str, log: Path, wait_for_ping: bool = True, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A zenskar_site ARGS` as production runs it (a prefork worker, `worker -B`, or beat), its
    output in `log`; for a worker, returns once it answers a ping."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "zenskar_site", *args],
            cwd=ROOT,
            env=process_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        if wait_for_ping:
            from zenskar_site.celery import app

            deadline = time.monotonic() + 30
            while not app.control.ping(timeout=0.5):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the Celery worker did not start; see {log}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def supervisord(*, tmp: Path, port: int, **env: str) -> Iterator[Path]:
    """The production processes (web, worker, beat) under `deploy/supervisord.conf`, as the README runs
    them. The same file, with its pid file and control socket moved into `tmp`; web listens on `port`.
    Returns the config's path, for `supervisorctl -c`."""
    shipped = (ROOT / "deploy" / "supervisord.conf").read_text()
    conf = tmp / "supervisord.conf"
    conf.write_text(
        shipped.replace("/tmp/metering-supervisord.pid", str(tmp / "supervisord.pid"))
        .replace("/tmp/metering-supervisor.sock", str(tmp / "supervisor.sock"))
        .replace("%(here)s/..", str(ROOT))
    )
    venv_bin = str(Path(sys.executable).parent)
    environment = process_env(
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        DATA_DIR=str(tmp / "data"),
        PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        **env,
    )
    with (tmp / "supervisord.log").open("ab") as out:
        process = subprocess.Popen(
            [str(Path(venv_bin) / "supervisord"), "-c", str(conf)],
            cwd=tmp,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/schema/", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"supervisord's web process did not start; see {tmp / 'supervisord.log'}")
                time.sleep(0.3)
        yield conf
    finally:
        process.terminate()  # supervisord stops its programs (and their process groups) first
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()


def supervised_pid(conf: Path, program: str) -> int:
    """The pid supervisord runs `program` as (0 when it is not running)."""
    venv_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(venv_bin / "supervisorctl"), "-c", str(conf), "pid", program], capture_output=True, text=True, check=False
    )
    text = result.stdout.strip()
    return int(text) if text.isdigit() else 0


@contextmanager
def celery_worker_with_beat(*, concurrency: int = 2, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker as production runs it: a prefork pool of `concurrency` processes (one per core on a
    2-core machine) with beat embedded, so the sweep and the retries of failed metrics run too."""
    with tempfile.TemporaryDirectory() as folder:
        args = ["--beat", "--schedule", str(Path(folder) / "beat-schedule"), f"--concurrency={concurrency}"]
        with _celery_worker_process(args, env=env, stop_seconds=15) as process:
            yield process


PG_BIN = Path("/usr/lib/postgresql")


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own on a free port: a test that stops or restarts the
    server does it to this one, never to the shared server other tests run on."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"postgres://postgres@127.0.0.1:{port}/app"
        self._bin = max(PG_BIN.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0) / "bin"

    def _as_postgres(self, *command: str) -> None:
        # No pipes: the server pg_ctl starts would inherit them and keep them open.
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        data, log = str(self.directory / "data"), str(self.directory / "server.log")
        self._as_postgres(str(self._bin / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._as_postgres(str(self._bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A new cluster, started, with the project's schema migrated into its database `app`; removed after."""
    directory = Path(tempfile.mkdtemp(prefix="private-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    server = PrivatePostgres(directory, free_port())
    server._as_postgres(
        str(server._bin / "initdb"), "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
    )
    try:
        server.start()
        server._as_postgres(
            str(server._bin / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "app"
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=process_env(DATABASE_URL=server.url),
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield server
    finally:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def private_postgres_run(server: PrivatePostgres, code: str) -> str:
    """Run Python in a Django process on the private cluster's database; returns what it printed."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=process_env(DATABASE_URL=server.url),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
