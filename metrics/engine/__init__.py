"""The aggregation engine: builder SQL (`builder`), computing a metric's values (`compute`), storing
them (`store`) and keeping them fresh (`refresh`). Import from those modules directly.
"""

# metrics/apps.py registers the SQLite aggregates on each new connection through this name.
from metrics.engine.builder import sqlite_functions_register

__all__ = ["sqlite_functions_register"]
