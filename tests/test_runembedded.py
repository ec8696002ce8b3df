"""`manage.py runembedded` (what `make run` starts) keeps its Celery worker alive: killed, it comes back.

A real run of the command in embedded mode (SQLite and the filesystem broker under a temporary
DATA_DIR), watched through /health, whose sweep age only moves while a worker and beat run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, free_port

pytestmark = [
    pytest.mark.sqlite_only,  # the embedded mode: SQLite and no broker
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc"),
]


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update({"DATA_DIR": str(data_dir), "CELERY_EAGER": "0", "PYTHONUNBUFFERED": "1", "METRICS_SWEEP_SECONDS": "1"})
    return env


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that just ended
            continue
    return found


def celery_child(pid: int) -> int | None:
    for child in children(pid):
        try:
            if b"celery" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except FileNotFoundError:
            continue
    return None


def health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return condition()


def test_runembedded_starts_its_worker_again_when_the_worker_is_killed(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    log = tmp_path / "runembedded.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runembedded", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: health(port).get("status") == "ok", 60), (health(port), log.read_text()[-3000:])
        first = celery_child(server.pid)
        assert first is not None

        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()

        # A new worker, not the old one, and it works: beat's sweep finishes again after the kill.
        assert wait_for(lambda: celery_child(server.pid) not in (None, first), 20), log.read_text()[-3000:]

        def swept_since_kill() -> bool:
            age = health(port).get("sweep_age_seconds")
            return age is not None and age < time.monotonic() - killed_at

        assert wait_for(swept_since_kill, 60), (health(port), log.read_text()[-3000:])
        assert server.poll() is None
        second = celery_child(server.pid)
        # The killed worker's beat went with it: one worker and one beat run, never a second beat.
        assert wait_for(lambda: len(processes_of(tmp_path)) == 2, 10), processes_of(tmp_path)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert "exited with code -9; restarting it" in log.read_text()
    # Stopping the command stops its worker too (no orphan left behind).
    assert second is not None
    assert wait_for(lambda: not Path(f"/proc/{second}").exists() or _zombie(second), 15)
    assert wait_for(lambda: not processes_of(tmp_path), 15), processes_of(tmp_path)


def processes_of(data_dir: Path) -> list[str]:
    """The live processes started for this run: the worker and its beat name its schedule file."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if str(data_dir / "celerybeat-schedule") in command and not _zombie(int(entry.name)):
            found.append(f"{entry.name}: {command}")
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
