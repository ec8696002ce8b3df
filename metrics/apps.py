from typing import Any

from django.apps import AppConfig


def _register_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        from metrics.engine.builder import sqlite_functions_register

        sqlite_functions_register(connection.connection)


class MetricsConfig(AppConfig):
    name = "metrics"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from metrics.dispatch import records_changed_receiver
        from metrics.exports import METRIC_VALUES_SOURCE
        from usage.csv.exports import export_source_register
        from usage.dirty import records_changed

        connection_created.connect(_register_sqlite_functions, dispatch_uid="metrics_sqlite_functions")
        records_changed.connect(records_changed_receiver, dispatch_uid="metrics_records_changed")
        export_source_register(METRIC_VALUES_SOURCE)
