"""The embedded default: the web server plus a Celery worker (with beat) on the filesystem broker.

No broker server is involved: tasks are files under DATA_DIR that the worker started here drains.
The worker is supervised: if it exits (a crash, the OOM killer, a stray `kill`), it is started again,
so metrics keep refreshing without anyone restarting the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

# A worker that dies sooner than this after its start is restarted after a growing pause (up to the
# maximum), so one that cannot start does not spin; one that ran longer is restarted at once.
RESTART_QUICK_EXIT_SECONDS = 10.0
RESTART_MAX_PAUSE_SECONDS = 30.0


class WorkerSupervisor:
    """Runs a command and starts it again whenever it exits, until `stop()`."""

    def __init__(self, command: list[str], *, log: Any) -> None:
        self.command = command
        self.log = log
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                # Its own process group: the worker forks beat (and a pool may fork more), and a worker
                # killed outright leaves those behind; the group lets them go with it (see `_group_end`).
                self._process = subprocess.Popen(self.command, start_new_session=True)

    def _watch(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            process = self._process
            started = time.monotonic()
            if process is None:
                return
            code = process.wait()
            # A worker killed outright (SIGKILL, the OOM killer) leaves its beat process running: a second
            # beat would come with the restarted worker and every periodic task would run twice.
            _group_end(process.pid, signal.SIGKILL)
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            pause = 1.0 if lived > RESTART_QUICK_EXIT_SECONDS else min(pause * 2, RESTART_MAX_PAUSE_SECONDS)
            self.log(f"The embedded Celery worker (pid {process.pid}) exited with code {code}; restarting it.")
            if self._stopping.wait(pause if lived <= RESTART_QUICK_EXIT_SECONDS else 0.5):
                return
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return
        _group_end(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        _group_end(process.pid, signal.SIGKILL)
        process.wait()


def _group_end(group: int, signum: int) -> None:
    """Send `signum` to every process of the worker's group (the worker, its beat, its pool)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


class Command(BaseCommand):
    help = "Run the web server and an embedded Celery worker + beat (embedded mode); the worker restarts if it dies."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args: Any, **options: Any) -> None:
        for folder in ("broker", "broker-processed", "broker-control"):
            (settings.DATA_DIR / folder).mkdir(parents=True, exist_ok=True)
        worker = WorkerSupervisor(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "zenskar_site",
                "worker",
                "--beat",
                "--pool=solo",
                "--loglevel=WARNING",
                "--schedule",
                str(settings.DATA_DIR / "celerybeat-schedule"),
            ],
            log=lambda message: self.stderr.write(message),
        )
        worker.start()
        # A SIGTERM (a process manager, `kill`) must stop the worker too, not leave it orphaned: turn it
        # into SystemExit so the `finally` below runs, as it does for Ctrl-C.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
        finally:
            worker.stop()
