"""`manage.py health`: exit 1 when the platform is not keeping metrics fresh, for monitoring to alert on.

Checks the database, the age of beat's last metrics sweep and, with `--ping`, that at least one worker
answers on the broker. Prints one line per check; the last line is OK or FAILING.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from zenskar_site.health import health_report


class Command(BaseCommand):
    help = "Exit 1 when the database is unreachable, the metrics sweep is overdue, or (--ping) no worker answers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-sweep-age",
            type=float,
            default=None,
            help=f"Seconds (default HEALTH_SWEEP_MAX_AGE_SECONDS, {settings.HEALTH_SWEEP_MAX_AGE_SECONDS:g}).",
        )
        parser.add_argument("--ping", action="store_true", help="Also require a worker to answer a ping.")
        parser.add_argument("--ping-timeout", type=float, default=2.0, help="Seconds to wait for pongs (default 2).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["max_sweep_age"] is not None and not options["max_sweep_age"] > 0:
            self.stderr.write("--max-sweep-age must be above 0.")
            sys.exit(2)
        report = health_report(sweep_max_age_seconds=options["max_sweep_age"])
        problems = list(report.problems)
        self.stdout.write(f"database: {'ok' if report.database_ok else 'unreachable'}")
        if report.sweep_age_seconds is not None:
            self.stdout.write(
                f"metrics sweep: last finished {report.sweep_age_seconds:.1f} s ago "
                f"(limit {report.sweep_max_age_seconds:g} s)"
            )
        if options["ping"]:
            from zenskar_site.celery import app

            try:
                replies = app.control.ping(timeout=options["ping_timeout"]) or []
            except Exception as exc:  # the broker is unreachable: that is the answer, not a crash
                replies = []
                problems.append(f"the broker is unreachable: {exc}")
            self.stdout.write(f"workers answering: {len(replies)}")
            if not replies:
                problems.append("no worker answered a ping")
        for problem in problems:
            self.stdout.write(f"problem: {problem}")
        self.stdout.write("FAILING" if problems else "OK")
        if problems:
            sys.exit(1)
