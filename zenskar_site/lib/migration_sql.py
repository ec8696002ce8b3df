"""Raw SQL that a migration runs on PostgreSQL or SQLite, whichever the project is on (triggers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def vendor_sql(*, postgres: str, sqlite: Sequence[str]) -> Callable[[Any, Any], None]:
    """A RunPython function that runs `postgres` (one script) or each `sqlite` statement."""

    def run(apps: Any, schema_editor: Any) -> None:
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            schema_editor.execute(postgres, params=None)  # params=None: a literal % stays as written
        elif vendor == "sqlite":
            for statement in sqlite:
                schema_editor.execute(statement)

    return run
