from typing import Any

from django.apps import AppConfig


def _register_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        from metrics.engine import sqlite_functions_register

        sqlite_functions_register(connection.connection)


class MetricsConfig(AppConfig):
    name = "metrics"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        connection_created.connect(_register_sqlite_functions, dispatch_uid="metrics_sqlite_functions")
