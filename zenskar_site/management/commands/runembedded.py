"""The embedded default: the web server plus a Celery worker (with beat) on the filesystem broker.

No broker server is involved: tasks are files under DATA_DIR that the worker started here drains.
"""

import os
import signal
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the web server and an embedded Celery worker + beat (embedded mode)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args: Any, **options: Any) -> None:
        for folder in ("broker", "broker-processed", "broker-control"):
            (settings.DATA_DIR / folder).mkdir(parents=True, exist_ok=True)
        worker = subprocess.Popen(
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
        )
        # A SIGTERM (a process manager, `kill`) must stop the worker too, not leave it orphaned: turn it
        # into SystemExit so the `finally` below runs, as it does for Ctrl-C.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
