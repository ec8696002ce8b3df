"""SPEC §5's SQL metrics sandbox: what a query may read, how it is rewritten, and how it runs."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metrics.sandbox import (
    CompiledQuery,
    SandboxError,
    SandboxTable,
    sql_metric_compile,
    sql_metric_execute,
)
from tests.factories import organisation_make, usage_event_make
from usage.models import UsageEvent, UsageRecord
from zenskar_site.accounts.models import Organisation

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
IN_PERIOD = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)

SUM_PER_CUSTOMER = """
    SELECT customer_id, sum(cpu_usage_hours) AS quantity
    FROM compute_hours
    WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{period_end}}
    GROUP BY customer_id
"""


# The tables of an organisation, for tests of what compiling refuses (no database needed to compile).
TABLES = {
    "compute_hours": SandboxTable(
        slug="compute_hours", usage_event_id=1, fields={"cpu_usage_hours": "Float64", "region": "Nullable(String)"}
    ),
    "api-calls": SandboxTable(slug="api-calls", usage_event_id=2, fields={"calls": "Int64", "amount": "Decimal"}),
}


def tables_of(organisation: Organisation) -> dict[str, SandboxTable]:
    return {
        event.api_slug: SandboxTable(slug=event.api_slug, usage_event_id=event.id, fields=event.dataschema["data"])
        for event in UsageEvent.objects.filter(organisation=organisation)
    }


def record(
    usage_event: UsageEvent,
    customer_id: str,
    data: dict[str, Any],
    *,
    at: dt.datetime = IN_PERIOD,
    voided: bool = False,
    superseded: bool = False,
) -> UsageRecord:
    return UsageRecord.objects.create(
        usage_event=usage_event,
        customer_id=customer_id,
        timestamp=at,
        data=data,
        content_hash="x",
        received_at=at,
        voided=voided,
        superseded=superseded,
    )


def compile_for(organisation: Organisation, sql: str) -> CompiledQuery:
    return sql_metric_compile(sql=sql, tables=tables_of(organisation), vendor=connection.vendor)


def run(organisation: Organisation, sql: str, **options: Any) -> list[tuple[str, str | None, str | None]]:
    compiled = compile_for(organisation, sql)
    return sorted(sql_metric_execute(compiled=compiled, period_start=START, period_end=END, **options))


def records_state() -> list[tuple[Any, ...]]:
    return list(UsageRecord.objects.order_by("id").values_list("id", "customer_id", "voided", "superseded", "data"))


@pytest.fixture
def api_calls(organisation: Organisation) -> UsageEvent:
    return usage_event_make(
        organisation=organisation, api_slug="api-calls", name="API calls", data={"calls": "Int64", "amount": "Decimal"}
    )


@pytest.fixture
def stored(compute_hours: UsageEvent, api_calls: UsageEvent) -> None:
    record(compute_hours, "cus_a", {"cpu_usage_hours": 1.5, "region": "eu-west"})
    record(compute_hours, "cus_a", {"cpu_usage_hours": 2.25, "region": "eu-west"})
    record(compute_hours, "cus_a", {"cpu_usage_hours": 0.125, "region": None}, at=IN_PERIOD + dt.timedelta(days=3))
    record(compute_hours, "cus_b", {"cpu_usage_hours": 0.25, "region": "us-east"})
    record(compute_hours, "cus_b", {"cpu_usage_hours": 100.0, "region": "us-east"}, at=END)  # next period
    record(compute_hours, "cus_b", {"cpu_usage_hours": 100.0, "region": "us-east"}, at=START - dt.timedelta(seconds=1))
    record(api_calls, "cus_a", {"calls": 3, "amount": "12.50"})
    record(api_calls, "cus_a", {"calls": 9_000_000_000, "amount": "0.25"})


# --- what a query computes ---


def test_a_sum_per_customer_over_the_period_is_exact(organisation: Organisation, stored: None) -> None:
    assert run(organisation, SUM_PER_CUSTOMER) == [("cus_a", "3.875", None), ("cus_b", "0.25", None)]


def test_integer_and_decimal_fields_sum_exactly(organisation: Organisation, stored: None) -> None:
    sql = 'SELECT customer_id, sum(calls) + sum(amount) AS quantity FROM "api-calls" GROUP BY customer_id'

    assert run(organisation, sql) == [("cus_a", "9000000015.75", None)]


@pytest.mark.postgres
def test_decimal_fields_sum_without_binary_rounding_on_postgresql(
    organisation: Organisation, api_calls: UsageEvent
) -> None:
    for amount in ("0.10", "0.20", "0.000000000001"):
        record(api_calls, "cus_a", {"calls": 1, "amount": amount})

    rows = run(organisation, 'SELECT customer_id, sum(amount) AS quantity FROM "api-calls" GROUP BY customer_id')

    assert rows == [("cus_a", "0.300000000001", None)]


def test_the_period_placeholders_are_bound_as_parameters_never_pasted(organisation: Organisation, stored: None) -> None:
    compiled = compile_for(organisation, SUM_PER_CUSTOMER)

    assert "{{" not in compiled.sql
    assert "period_" not in compiled.sql
    assert "2026" not in compiled.sql
    assert compiled.sql.count("%s") == 2
    assert compiled.param_names == ["period_start", "period_end"]
    assert compiled.sources == ["compute_hours"]
    assert compiled.has_dimension is False


def test_placeholders_are_listed_in_the_order_they_appear(
    organisation: Organisation, compute_hours: UsageEvent
) -> None:
    sql = """
        SELECT customer_id, count(*) AS quantity FROM compute_hours
        WHERE "timestamp" < {{ period_end }} AND "timestamp" >= {{period_start}} AND "timestamp" < {{  period_end  }}
        GROUP BY customer_id
    """

    assert compile_for(organisation, sql).param_names == ["period_end", "period_start", "period_end"]


def test_ctes_can_read_usage_events(organisation: Organisation, stored: None) -> None:
    sql = """
        WITH in_period AS (
            SELECT customer_id, cpu_usage_hours FROM compute_hours
            WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }}
        ),
        per_customer AS (SELECT customer_id, sum(cpu_usage_hours) AS total FROM in_period GROUP BY customer_id)
        SELECT customer_id, total * 2 AS quantity FROM per_customer
    """

    assert run(organisation, sql) == [("cus_a", "7.75", None), ("cus_b", "0.5", None)]


def test_a_slug_with_a_dash_is_read_when_quoted(organisation: Organisation, stored: None) -> None:
    compiled = compile_for(organisation, 'SELECT customer_id, count(*) AS quantity FROM "api-calls" GROUP BY 1')

    assert compiled.sources == ["api-calls"]
    assert sql_metric_execute(compiled=compiled, period_start=START, period_end=END) == [("cus_a", "2", None)]


def test_a_union_of_usage_events_is_read(organisation: Organisation, stored: None) -> None:
    sql = """
        SELECT customer_id, count(*) AS quantity FROM compute_hours AS c
        WHERE c."timestamp" >= {{ period_start }} AND c."timestamp" < {{ period_end }} GROUP BY customer_id
        UNION ALL
        SELECT customer_id, sum(calls) FROM "api-calls" GROUP BY customer_id
    """

    compiled = compile_for(organisation, sql)

    assert compiled.sources == ["compute_hours", "api-calls"]
    assert sorted(sql_metric_execute(compiled=compiled, period_start=START, period_end=END)) == [
        ("cus_a", "3", None),
        ("cus_a", "9000000003", None),
        ("cus_b", "1", None),
    ]


def test_another_organisations_usage_events_are_out_of_reach(organisation: Organisation, stored: None) -> None:
    globex = organisation_make(name="Globex")
    secret = usage_event_make(organisation=globex, api_slug="secret_usage", data={"secret": "String"})
    same_slug = usage_event_make(organisation=globex, api_slug="compute_hours")
    record(secret, "cus_a", {"secret": "hunter2"})
    record(same_slug, "cus_a", {"cpu_usage_hours": 1000.0})

    with pytest.raises(SandboxError, match="Unknown table 'secret_usage'"):
        run(organisation, "SELECT customer_id, count(*) AS quantity FROM secret_usage GROUP BY customer_id")
    assert run(organisation, SUM_PER_CUSTOMER) == [("cus_a", "3.875", None), ("cus_b", "0.25", None)]
    assert run(globex, SUM_PER_CUSTOMER) == [("cus_a", "1000", None)]


def test_voided_and_superseded_records_are_not_seen(organisation: Organisation, compute_hours: UsageEvent) -> None:
    record(compute_hours, "cus_a", {"cpu_usage_hours": 1.0})
    record(compute_hours, "cus_a", {"cpu_usage_hours": 10.0}, voided=True)
    record(compute_hours, "cus_a", {"cpu_usage_hours": 100.0}, superseded=True)
    record(compute_hours, "cus_b", {"cpu_usage_hours": 5.0}, voided=True)

    assert run(organisation, SUM_PER_CUSTOMER) == [("cus_a", "1", None)]


def test_only_the_declared_columns_of_a_usage_event_are_exposed(
    organisation: Organisation, compute_hours: UsageEvent
) -> None:
    record(compute_hours, "cus_a", {"cpu_usage_hours": 1.0})

    with pytest.raises(SandboxError, match="Unknown column 'voided'"):
        run(organisation, "SELECT customer_id, count(*) AS quantity FROM compute_hours WHERE NOT voided GROUP BY 1")
    with pytest.raises(SandboxError, match="Unknown column 'content_hash'"):
        run(organisation, "SELECT customer_id, length(c.content_hash) AS quantity FROM compute_hours AS c")
    # PostgreSQL reads `c.row_to_json` as row_to_json(c): a function call in a column's clothes.
    with pytest.raises(SandboxError, match="Unknown column 'row_to_json'"):
        run(organisation, "SELECT customer_id, length(CAST(c.row_to_json AS text)) AS quantity FROM compute_hours c")


def test_a_dimension_column_is_returned_as_text(organisation: Organisation, stored: None) -> None:
    sql = """
        SELECT customer_id, count(*) AS quantity, region AS dimension FROM compute_hours
        WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }}
          AND (region LIKE 'eu%' OR region IS NULL)
        GROUP BY customer_id, region
    """

    compiled = compile_for(organisation, sql)

    assert compiled.has_dimension is True
    assert sorted(
        sql_metric_execute(compiled=compiled, period_start=START, period_end=END), key=lambda row: str(row)
    ) == [("cus_a", "1", None), ("cus_a", "2", "eu-west")]


def test_window_functions_pick_the_latest_value_per_customer(organisation: Organisation, stored: None) -> None:
    sql = """
        SELECT customer_id, cpu_usage_hours AS quantity FROM (
            SELECT customer_id, cpu_usage_hours,
                   row_number() OVER (PARTITION BY customer_id ORDER BY "timestamp" DESC, id DESC) AS n
            FROM compute_hours
            WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }}
        ) AS ranked
        WHERE n = 1
    """

    assert run(organisation, sql) == [("cus_a", "0.125", None), ("cus_b", "0.25", None)]


def test_date_functions_give_the_same_answer_on_either_database(organisation: Organisation, stored: None) -> None:
    sql = """
        SELECT customer_id,
               count(DISTINCT date_trunc('day', "timestamp")) AS quantity,
               CAST(max(extract(hour FROM "timestamp")) AS TEXT) AS dimension
        FROM compute_hours
        WHERE "timestamp" >= {{ period_end }} - interval '1 month'
          AND "timestamp" < CAST({{ period_end }} AS timestamptz)
        GROUP BY customer_id
    """

    assert run(organisation, sql) == [("cus_a", "2", "12"), ("cus_b", "1", "12")]


def test_compiling_runs_no_query(organisation: Organisation, stored: None) -> None:
    tables = tables_of(organisation)

    with CaptureQueriesContext(connection) as queries:
        sql_metric_compile(sql=SUM_PER_CUSTOMER, tables=tables, vendor=connection.vendor)

    assert queries.captured_queries == []


# --- what a query may not do ---

HOSTILE = [
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours; DELETE FROM usage_usagerecord",
        "exactly one statement",
        id="two-statements",
    ),
    pytest.param(
        "SELECT customer_id, count(*) AS quantity FROM secret_usage GROUP BY customer_id",
        "Unknown table 'secret_usage'",
        id="other-organisation",
    ),
    pytest.param(
        "SELECT customer_id, count(*) AS quantity FROM usage_usagerecord GROUP BY customer_id",
        "Unknown table 'usage_usagerecord'",
        id="records-table",
    ),
    pytest.param("TABLE usage_usagerecord", "Unknown table 'usage_usagerecord'", id="table-statement"),
    pytest.param(
        "SELECT usename AS customer_id, 1 AS quantity FROM pg_catalog.pg_user", "Schema-qualified", id="pg_user"
    ),
    pytest.param(
        "SELECT tablename AS customer_id, 1 AS quantity FROM pg_tables", "Unknown table 'pg_tables'", id="pg_tables"
    ),
    pytest.param(
        "SELECT table_name AS customer_id, 1 AS quantity FROM information_schema.tables",
        "Schema-qualified",
        id="information_schema",
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM public.usage_usagerecord", "Schema-qualified", id="public-schema"
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE pg_sleep(10) IS NOT NULL",
        "pg_sleep()",
        id="pg_sleep",
    ),
    pytest.param(
        "SELECT pg_read_file('/etc/passwd') AS customer_id, 1 AS quantity", "pg_read_file()", id="pg_read_file"
    ),
    pytest.param("SELECT pg_ls_dir('.') AS customer_id, 1 AS quantity", "pg_ls_dir()", id="pg_ls_dir"),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM dblink('host=evil', 'SELECT 1') AS t(customer_id text)",
        "dblink()",
        id="dblink-table",
    ),
    pytest.param(
        "SELECT dblink_exec('host=evil', 'DROP TABLE x') AS customer_id, 1 AS quantity", "dblink_exec()", id="dblink"
    ),
    pytest.param("SELECT lo_import('/etc/passwd') AS customer_id, 1 AS quantity", "lo_import()", id="lo_import"),
    pytest.param(
        "SELECT set_config('statement_timeout', '0', false) AS customer_id, 1 AS quantity",
        "set_config()",
        id="set_config",
    ),
    pytest.param(
        "SELECT current_setting('data_directory') AS customer_id, 1 AS quantity",
        "current_setting()",
        id="current_setting",
    ),
    pytest.param("SELECT version() AS customer_id, 1 AS quantity", "VERSION()", id="version"),
    pytest.param("SELECT current_user AS customer_id, 1 AS quantity", "CURRENT_USER", id="current_user"),
    pytest.param("SELECT 'x' AS customer_id, txid_current() AS quantity", "txid_current()", id="txid"),
    pytest.param("SELECT 'x' AS customer_id, random() AS quantity", "RANDOM()", id="random"),
    pytest.param(
        "SELECT 'x' AS customer_id, count(*) AS quantity FROM generate_series(1, 100000000) AS g",
        "GENERATE_SERIES",
        id="generate_series",
    ),
    pytest.param(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT 'x' AS customer_id, count(*) AS quantity FROM n",
        "WITH RECURSIVE",
        id="recursive-cte",
    ),
    pytest.param("COPY usage_usagerecord TO '/tmp/records'", "not COPY", id="copy"),
    pytest.param("SET statement_timeout = 0", "not SET", id="set"),
    pytest.param("GRANT SELECT ON usage_usagerecord TO PUBLIC", "not GRANT", id="grant"),
    pytest.param("EXPLAIN ANALYZE SELECT 1", "not EXPLAIN", id="explain"),
    pytest.param(
        "SELECT customer_id, 1 AS quantity INTO stolen FROM compute_hours", "SELECT ... INTO", id="select-into"
    ),
    pytest.param("SELECT customer_id, 1 AS quantity FROM compute_hours FOR UPDATE", "locking clause", id="for-update"),
    pytest.param(
        "WITH gone AS (DELETE FROM compute_hours RETURNING customer_id) SELECT customer_id, 1 AS quantity FROM gone",
        "not allowed",
        id="writing-cte",
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE 'usage_usagerecord'::regclass IS NOT NULL",
        "REGCLASS",
        id="regclass-cast",
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE customer_id = $1", "parameter $1", id="dollar-param"
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE customer_id = %s", "Parameters", id="format-param"
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE customer_id = {{ customer }}",
        "Unknown placeholder {{ customer }}",
        id="unknown-placeholder",
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE customer_id = '{{ period_start }}'",
        "outside quotes",
        id="quoted-placeholder",
    ),
    pytest.param(
        # The CTE's name is only in scope inside its subquery: the outer reference is the real table.
        "SELECT username AS customer_id, 1 AS quantity FROM auth_user, "
        "(WITH auth_user AS (SELECT 1 AS a) SELECT a FROM auth_user) AS x",
        "Unknown table 'auth_user'",
        id="cte-out-of-scope",
    ),
    pytest.param(
        # A CTE cannot read one defined after it: PostgreSQL would read the real table.
        "WITH a AS (SELECT username AS customer_id, 1 AS quantity FROM auth_user), "
        "auth_user AS (SELECT customer_id FROM compute_hours) SELECT customer_id, quantity FROM a",
        "Unknown table 'auth_user'",
        id="cte-forward-reference",
    ),
    pytest.param(
        "WITH usage_usagerecord AS (SELECT customer_id FROM compute_hours) "
        "SELECT customer_id, 1 AS quantity FROM usage_usagerecord",
        "cannot be named",
        id="cte-shadowing-records",
    ),
    pytest.param("VALUES ('x', 1)", "not VALUES", id="values"),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours, LATERAL (SELECT 1) AS l", "LATERAL", id="lateral"
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours TABLESAMPLE SYSTEM (50)", "TABLESAMPLE", id="tablesample"
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours WHERE \"timestamp\" > {{ period_start }} - INTERVAL '1' x",
        "Write intervals as",
        id="interval-unit",
    ),
]


@pytest.mark.parametrize(("sql", "message"), HOSTILE)
def test_hostile_sql_is_refused_with_a_clear_message_and_runs_nothing(db: None, sql: str, message: str) -> None:
    with CaptureQueriesContext(connection) as queries, pytest.raises(SandboxError) as refused:
        sql_metric_compile(sql=sql, tables=TABLES, vendor=connection.vendor)

    assert message in refused.value.errors["sql"][0]
    assert queries.captured_queries == []


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO compute_hours (customer_id) VALUES ('cus_x')",
        "INSERT INTO usage_usagerecord (customer_id) SELECT customer_id FROM compute_hours",
        "UPDATE usage_usagerecord SET voided = true",
        "UPDATE compute_hours SET customer_id = 'cus_x'",
        "DELETE FROM usage_usagerecord",
        "DELETE FROM compute_hours",
        "TRUNCATE usage_usagerecord",
        "DROP TABLE usage_usagerecord",
        "CREATE TABLE stolen AS SELECT * FROM compute_hours",
        "ALTER TABLE usage_usagerecord ADD COLUMN x int",
        "MERGE INTO usage_usagerecord AS r USING compute_hours AS c ON r.id = c.id WHEN MATCHED THEN DELETE",
    ],
)
def test_writes_are_refused_by_the_compiler_before_any_sql_runs(
    organisation: Organisation, stored: None, sql: str
) -> None:
    tables = tables_of(organisation)  # read here, so that what is captured below is the compiler's alone

    with (
        CaptureQueriesContext(connection) as queries,
        pytest.raises(SandboxError, match="Only a SELECT query is allowed"),
    ):
        sql_metric_compile(sql=sql, tables=tables, vendor=connection.vendor)

    assert queries.captured_queries == []


RECORD_COLUMNS = 'usage_event_id, customer_id, "timestamp", data, content_hash, received_at, voided, superseded'
# Writes handed straight to the runner, past the compiler. Each returns rows when it is allowed to run
# (a data-modifying WITH ... RETURNING on PostgreSQL; SQLite's INSERT ... SELECT returns no rows and no
# error), so only the runner's read-only mode makes them fail with the database's read-only error.
RUNNER_WRITES = {
    "postgresql": [
        pytest.param(
            f"INSERT INTO usage_usagerecord ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM usage_usagerecord",
            id="insert",
        ),
        pytest.param(
            "WITH changed AS (UPDATE usage_usagerecord SET voided = true RETURNING customer_id) "
            "SELECT customer_id, 1 AS quantity FROM changed",
            id="update-returning",
        ),
        pytest.param(
            "WITH gone AS (DELETE FROM usage_usagerecord RETURNING customer_id) SELECT customer_id, 1 AS quantity FROM gone",
            id="delete-returning",
        ),
    ],
    "sqlite": [
        pytest.param(
            f"INSERT INTO usage_usagerecord ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM usage_usagerecord",
            id="insert",
        ),
    ],
}
READ_ONLY_ERROR = {"postgresql": "read-only transaction", "sqlite": "readonly database"}


@pytest.mark.parametrize("sql", RUNNER_WRITES["postgresql" if os.environ.get("DATABASE_URL") else "sqlite"])
def test_the_runner_is_read_only_even_for_sql_the_compiler_would_refuse(
    organisation: Organisation, stored: None, sql: str
) -> None:
    write = CompiledQuery(sql=sql, param_names=[], sources=[], has_dimension=False)
    before = records_state()

    with pytest.raises(SandboxError, match=READ_ONLY_ERROR[connection.vendor]):
        sql_metric_execute(compiled=write, period_start=START, period_end=END)

    assert records_state() == before


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT customer_id FROM compute_hours", "missing quantity"),
        ("SELECT count(*) AS quantity FROM compute_hours", "missing customer_id"),
        (
            "SELECT customer_id, count(*) AS quantity, max(region) AS region FROM compute_hours GROUP BY 1",
            "unexpected 'region'",
        ),
        (
            "SELECT customer_id, count(*) AS amount FROM compute_hours GROUP BY 1",
            "missing quantity; unexpected 'amount'",
        ),
        ('SELECT customer_id, count(*) AS "Quantity" FROM compute_hours GROUP BY 1', "unexpected 'Quantity'"),
        ("SELECT customer_id, count(*) AS quantity, 1 AS quantity FROM compute_hours GROUP BY 1", "repeated quantity"),
        ("SELECT * FROM compute_hours", "not *"),
        ("SELECT customer_id, count(*) FROM compute_hours GROUP BY 1", "with AS quantity"),
    ],
)
def test_wrong_result_columns_are_refused(sql: str, message: str) -> None:
    with pytest.raises(SandboxError) as refused:
        sql_metric_compile(sql=sql, tables=TABLES, vendor="postgresql")

    assert message in refused.value.errors["sql"][0]


def test_result_column_names_fold_to_lower_case_like_postgresql(organisation: Organisation, stored: None) -> None:
    rows = run(organisation, 'SELECT Customer_ID, COUNT(*) AS Quantity FROM "api-calls" GROUP BY Customer_ID')

    assert rows == [("cus_a", "2", None)]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC customer_id FROM compute_hours", "does not parse"),
        ("SELECT customer_id, (1 AS quantity FROM compute_hours", "does not parse"),
        ("   ", "Write one SELECT query"),
        (
            "SELECT customer_id, count(*) AS quantity FROM api-calls GROUP BY 1",
            "Quote table names that contain '-': \"api-calls\"",
        ),
        ("SELECT customer_id, count(*) AS quantity FROM Compute_Hours_X GROUP BY 1", "Unknown table 'compute_hours_x'"),
    ],
)
def test_text_that_is_not_a_valid_query_is_refused(sql: str, message: str) -> None:
    with pytest.raises(SandboxError) as refused:
        sql_metric_compile(sql=sql, tables=TABLES, vendor="sqlite")

    assert message in refused.value.errors["sql"][0]


# --- how a query runs ---


def test_a_query_over_the_time_limit_is_stopped(organisation: Organisation, compute_hours: UsageEvent) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=compute_hours,
            customer_id=f"cus_{i}",
            timestamp=IN_PERIOD,
            data={"cpu_usage_hours": 1.0},
            content_hash="x",
            received_at=IN_PERIOD,
        )
        for i in range(300)
    )
    sql = """
        SELECT a.customer_id, count(*) AS quantity
        FROM compute_hours AS a CROSS JOIN compute_hours AS b CROSS JOIN compute_hours AS c
        CROSS JOIN compute_hours AS d
        GROUP BY a.customer_id
    """
    began = time.monotonic()

    with pytest.raises(SandboxError, match="stopped after 200 ms"):
        run(organisation, sql, timeout_ms=200)

    assert time.monotonic() - began < 5
    assert run(organisation, SUM_PER_CUSTOMER)[:1] == [("cus_0", "1", None)]  # the connection still works


def test_more_rows_than_max_rows_is_an_error(organisation: Organisation, compute_hours: UsageEvent) -> None:
    for i in range(4):
        record(compute_hours, f"cus_{i}", {"cpu_usage_hours": 1.0})

    assert len(run(organisation, SUM_PER_CUSTOMER, max_rows=4)) == 4
    with pytest.raises(SandboxError, match="more than 3 rows"):
        run(organisation, SUM_PER_CUSTOMER, max_rows=3)


def test_the_surrounding_transaction_stays_writable_after_a_query(
    organisation: Organisation, compute_hours: UsageEvent
) -> None:
    record(compute_hours, "cus_a", {"cpu_usage_hours": 1.0})
    run(organisation, SUM_PER_CUSTOMER)
    failing = "1 / 0" if connection.vendor == "postgresql" else "abs(-9223372036854775808)"  # an error on each
    with pytest.raises(SandboxError, match="The query failed"):
        run(organisation, f"SELECT customer_id, {failing} AS quantity FROM compute_hours")

    record(compute_hours, "cus_a", {"cpu_usage_hours": 2.0})

    assert run(organisation, SUM_PER_CUSTOMER) == [("cus_a", "3", None)]


# --- no function outside the allow-list, whatever the syntax ---

# PostgreSQL reads `c.f` as the call f(c) when the relation c has no column f: a name defined anywhere
# else in the query must not make `c.f` pass for a column.
ATTRIBUTE_NOTATION = [
    pytest.param(
        "SELECT customer_id, length(CAST(c.row_to_json AS text)) AS quantity "
        "FROM compute_hours c, (SELECT 1 AS row_to_json) z",
        "'c' has no column 'row_to_json'",
        id="alias-of-another-subquery",
    ),
    pytest.param(
        "WITH z AS (SELECT 1 AS to_json) "
        "SELECT customer_id, length(CAST(c.to_json AS text)) AS quantity FROM compute_hours c, z",
        "'c' has no column 'to_json'",
        id="alias-of-a-cte",
    ),
    pytest.param(
        "SELECT customer_id, length(CAST(c.row_to_json AS text)) AS quantity "
        "FROM compute_hours c, (SELECT 1) AS z(row_to_json)",
        "'c' has no column 'row_to_json'",
        id="column-list-of-another-subquery",
    ),
    pytest.param(
        # The column list renames id, customer_id and timestamp: c.timestamp is no column any more.
        'SELECT c.customer_id, 1 AS quantity FROM compute_hours AS c(i, customer_id, ts) WHERE c."timestamp" IS NOT NULL',
        "'c' has no column 'timestamp'",
        id="renamed-by-a-column-list",
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours c "
        "WHERE EXISTS (SELECT 1 FROM (SELECT 1 AS to_json) d WHERE c.to_json IS NOT NULL)",
        "'c' has no column 'to_json'",
        id="outer-relation",
    ),
    pytest.param(
        "SELECT customer_id, 1 AS quantity FROM compute_hours c "
        "WHERE EXISTS (SELECT 1 FROM (SELECT 1 AS to_json) c, (SELECT c.to_json) e)",
        "'c' has no column 'to_json'",
        id="one-name-for-two-relations",
    ),
    pytest.param(
        # A UNION's columns are named by its first SELECT.
        "SELECT u.customer_id, max(length(CAST(u.row_to_json AS text))) AS quantity FROM ("
        "SELECT customer_id, 1 AS n FROM compute_hours UNION ALL SELECT customer_id, 2 AS row_to_json FROM compute_hours"
        ") AS u GROUP BY 1",
        "'u' has no column 'row_to_json'",
        id="name-of-a-later-union-branch",
    ),
    pytest.param(
        "SELECT x.customer_id, 1 AS quantity FROM compute_hours c", "Unknown table 'x'", id="relation-not-in-from"
    ),
]


@pytest.mark.parametrize(("sql", "message"), ATTRIBUTE_NOTATION)
def test_a_qualified_column_must_be_a_column_of_its_relation(db: None, sql: str, message: str) -> None:
    with pytest.raises(SandboxError) as refused:
        sql_metric_compile(sql=sql, tables=TABLES, vendor="postgresql")

    assert message in refused.value.errors["sql"][0]


def test_qualified_columns_of_tables_subqueries_and_ctes_still_run(organisation: Organisation, stored: None) -> None:
    sql = """
        WITH per_customer(cid, total) AS (
            SELECT c.customer_id, sum(c.cpu_usage_hours) FROM compute_hours AS c
            WHERE c."timestamp" >= {{ period_start }} AND c."timestamp" < {{ period_end }}
            GROUP BY c.customer_id
        )
        SELECT p.cid AS customer_id, p.total + max(s.calls) AS quantity
        FROM per_customer AS p JOIN (SELECT * FROM "api-calls") AS s ON s.customer_id = p.cid
        GROUP BY p.cid, p.total
    """

    assert run(organisation, sql) == [("cus_a", "9000000003.875", None)]


# --- values are recomputable: nothing reads the clock ---

CLOCK = [
    pytest.param("CAST('now' AS TIMESTAMPTZ)", "'now' reads as the current moment", id="cast-now"),
    pytest.param("'today'::date", "'today' reads as the current date", id="today"),
    pytest.param("DATE 'tomorrow'", "'tomorrow' reads as tomorrow's date", id="tomorrow"),
    pytest.param("TIMESTAMP 'yesterday 10:00'", "'yesterday' reads as yesterday's date", id="yesterday-at-ten"),
    pytest.param("'infinity'::timestamptz", "'infinity' reads as an unbounded moment", id="infinity"),
    pytest.param("CAST('epoch' AS DATE) + INTERVAL '1 day'", "'epoch' reads as 1970-01-01", id="epoch"),
    pytest.param("' NoW '", "'now' reads as the current moment", id="implicit-cast"),
    pytest.param("coalesce(\"timestamp\", 'now')", "'now' reads as the current moment", id="coalesce"),
    pytest.param("CAST('no' || 'w' AS TIMESTAMPTZ)", "takes a date or a timestamp", id="text-made-at-run-time"),
    pytest.param("CAST(upper(region) AS DATE)", "takes a date or a timestamp", id="text-of-a-field"),
    pytest.param("date_trunc('day', region)", "takes a date or a timestamp", id="date-trunc-of-text"),
    pytest.param("region + INTERVAL '1 day'", "takes a date or a timestamp", id="text-plus-interval"),
    pytest.param(
        "(SELECT max(CAST(t.r AS TIMESTAMP)) FROM (SELECT region AS r FROM compute_hours) AS t)",
        "takes a date or a timestamp",
        id="text-through-an-alias",
    ),
]


@pytest.mark.parametrize(("moment", "message"), CLOCK)
def test_values_that_depend_on_the_clock_are_refused(db: None, moment: str, message: str) -> None:
    sql = f'SELECT customer_id, count(*) AS quantity FROM compute_hours WHERE "timestamp" < {moment} GROUP BY 1'

    with CaptureQueriesContext(connection) as queries, pytest.raises(SandboxError) as refused:
        sql_metric_compile(sql=sql, tables=TABLES, vendor=connection.vendor)

    assert message in refused.value.errors["sql"][0]
    assert queries.captured_queries == []


@pytest.mark.parametrize(
    "moment",
    [
        "now()",
        "current_timestamp",
        "current_date",
        "localtimestamp",
        "clock_timestamp()",
        "statement_timestamp()",
        "transaction_timestamp()",
        "timeofday()::timestamptz",
    ],
)
def test_clock_functions_are_not_allowed(moment: str) -> None:
    sql = f'SELECT customer_id, count(*) AS quantity FROM compute_hours WHERE "timestamp" < {moment} GROUP BY 1'

    with pytest.raises(SandboxError, match="is not allowed in a metric query"):
        sql_metric_compile(sql=sql, tables=TABLES, vendor="postgresql")


def test_text_that_merely_contains_a_clock_word_is_fine(organisation: Organisation, stored: None) -> None:
    sql = "SELECT customer_id, count(*) AS quantity FROM compute_hours WHERE region <> 'unknown-snow' GROUP BY 1"

    assert run(organisation, sql)[0] == ("cus_a", "2", None)


# --- what the sandbox does not know, it refuses ---


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT * FROM ROWS FROM (pg_ls_dir('.'))", id="alone"),
        pytest.param(
            "SELECT customer_id, 1 AS quantity FROM ROWS FROM (pg_ls_dir('.')) AS r(customer_id)", id="with-columns"
        ),
        pytest.param(
            "SELECT customer_id, 1 AS quantity FROM compute_hours, ROWS FROM (generate_series(1, 2), pg_ls_dir('.')) AS r",
            id="joined",
        ),
    ],
)
def test_rows_from_is_refused_with_the_sandboxs_own_error(sql: str) -> None:
    with pytest.raises(SandboxError) as refused:
        sql_metric_compile(sql=sql, tables=TABLES, vendor="postgresql")

    assert "ROWS FROM" in refused.value.errors["sql"][0]
    assert "is not allowed" in refused.value.errors["sql"][0]
