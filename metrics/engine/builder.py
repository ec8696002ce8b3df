"""The aggregation engine for builder metrics: one GROUP BY in the database per time range.

The same definition compiles to PostgreSQL or SQLite. Amounts stay exact: PostgreSQL aggregates in
NUMERIC; SQLite, which has no exact numeric type, aggregates with Python `Decimal` functions that
are registered on each connection (see `sqlite_functions_register`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import orjson
from django.db import connection

from usage.models import Period, UsageRecord
from usage.schema import NUMERIC_TYPES, type_parse

NUMERIC_AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "latest"})
GROUPABLE_TYPES = frozenset({"String", "Int64", "Bool", "Date32", "UUID"})
FILTER_OPS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "is_null", "is_not_null")
SCALE = Decimal("1e-12")


def decimal_text(value: Decimal | None) -> str | None:
    """The canonical text of an amount: at most 12 decimals (half-even), no exponent, no trailing zeros."""
    if value is None:
        return None
    if value.as_tuple().exponent < -12:  # type: ignore[operator]
        value = value.quantize(SCALE, rounding=ROUND_HALF_EVEN)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def to_decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def average(total: Any, count: Any) -> Decimal | None:
    if total is None or not count:
        return None
    with localcontext() as context:
        context.prec = 60
        return to_decimal(total) / Decimal(int(count))  # type: ignore[operator]


@dataclass(frozen=True)
class BuilderDefinition:
    usage_event_id: int
    fields: dict[str, str]  # data field -> type text
    aggregation: str
    field: str
    filters: list[dict[str, Any]]
    group_by: list[str]
    granularity: str


@dataclass(frozen=True)
class ComputedValue:
    customer_id: str
    period_start: dt.datetime
    dimension: dict[str, str | None] | None
    value: str | None

    @property
    def dimension_key(self) -> str:
        return dimension_key_of(self.dimension)


def dimension_key_of(dimension: dict[str, Any] | None) -> str:
    return orjson.dumps(dimension, option=orjson.OPT_SORT_KEYS).decode() if dimension else ""


# --- SQL building ---


class _Sql:
    """Dialect pieces for one vendor."""

    def __init__(self, vendor: str) -> None:
        self.pg = vendor == "postgresql"

    def raw(self, field: str) -> str:
        # Field names are validated against ^[a-z][a-z0-9_]{0,62}$ before they reach here.
        return f"(data->>'{field}')" if self.pg else f"json_extract(data, '$.{field}')"

    def typed(self, field: str, base: str) -> str:
        raw = self.raw(field)
        if base in NUMERIC_TYPES:
            return f"CAST({raw} AS NUMERIC)" if self.pg else raw
        if base == "Bool":
            return f"CAST({raw} AS BOOLEAN)" if self.pg else raw
        if base == "DateTime64":
            return f"CAST({raw} AS TIMESTAMPTZ)" if self.pg else f"julianday({raw})"
        return raw

    def comparable(self, field: str, base: str) -> str:
        """The expression filters compare (SQLite compares numbers as REAL)."""
        if not self.pg and base in NUMERIC_TYPES:
            return f"CAST({self.raw(field)} AS REAL)"
        return self.typed(field, base)

    def bucket(self, granularity: str) -> str:
        if self.pg:
            return f"date_trunc('{granularity}', \"timestamp\", 'UTC')"
        return {
            str(Period.HOUR): "substr(\"timestamp\", 1, 13) || ':00:00'",
            str(Period.DAY): "substr(\"timestamp\", 1, 10) || ' 00:00:00'",
            str(Period.MONTH): "substr(\"timestamp\", 1, 7) || '-01 00:00:00'",
        }[granularity]

    def aggregate(self, aggregation: str, value: str, raw: str) -> list[str]:
        if aggregation == "count":
            return ["COUNT(*)"]
        if aggregation == "unique_count":
            return [f"COUNT(DISTINCT {raw})"]
        if aggregation == "avg":
            return [f"SUM({value})" if self.pg else f"z_sum({value})", f"COUNT({value})"]
        if aggregation == "latest":
            if self.pg:
                return [f'(array_agg({value} ORDER BY "timestamp" DESC, id DESC))[1]']
            return [f'z_latest("timestamp", id, {value})']
        function = {"sum": "SUM", "min": "MIN", "max": "MAX"}[aggregation]
        return [f"{function}({value})" if self.pg else f"z_{function.lower()}({value})"]

    def param(self, base: str, value: Any) -> Any:
        if base in NUMERIC_TYPES:
            number = to_decimal(value)
            return number if self.pg else float(number)  # type: ignore[arg-type]
        if base == "Bool":
            return bool(value) if self.pg else int(bool(value))
        if base == "DateTime64":
            from usage.schema import datetime_parse

            moment = datetime_parse(value)
            return moment if self.pg else _julian(moment)
        return value


def _julian(moment: dt.datetime) -> float:
    return moment.timestamp() / 86400.0 + 2440587.5


def filter_sql(sql: _Sql, definition_fields: dict[str, str], filters: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for condition in filters:
        field, op, value = condition["field"], condition["op"], condition.get("value")
        base = type_parse(definition_fields[field]).base
        expr = sql.comparable(field, base)
        if op == "is_null":
            clauses.append(f"{sql.raw(field)} IS NULL")
        elif op == "is_not_null":
            clauses.append(f"{sql.raw(field)} IS NOT NULL")
        elif op in ("in", "not_in"):
            assert isinstance(value, list)
            marks = ", ".join(["%s"] * len(value))
            params.extend(sql.param(base, v) for v in value)
            if op == "in":
                clauses.append(f"{expr} IN ({marks})")
            else:  # a missing value is "not in" the list
                clauses.append(f"({sql.raw(field)} IS NULL OR {expr} NOT IN ({marks}))")
        elif op == "neq":
            params.append(sql.param(base, value))
            clauses.append(f"({sql.raw(field)} IS NULL OR {expr} <> %s)")
        else:
            operator = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            params.append(sql.param(base, value))
            clauses.append(f"{expr} {operator} %s")
    return "".join(f" AND {c}" for c in clauses), params


def builder_compute(*, definition: BuilderDefinition, start: dt.datetime, end: dt.datetime) -> list[ComputedValue]:
    """Every value of the metric for periods starting in [start, end): one GROUP BY over raw records."""
    sql = _Sql(connection.vendor)
    aggregation, field = definition.aggregation, definition.field
    value_expr = raw_expr = "NULL"
    if field:
        base = type_parse(definition.fields[field]).base
        value_expr, raw_expr = sql.typed(field, base), sql.raw(field)
    dims = [sql.raw(name) for name in definition.group_by]
    aggregates = sql.aggregate(aggregation, value_expr, raw_expr)
    where, filter_params = filter_sql(sql, definition.fields, definition.filters)
    adapt = (lambda v: v) if sql.pg else connection.ops.adapt_datetimefield_value
    group = ", ".join(["customer_id", *dims, "bucket"])
    # Every name in the text is a validated field name or a constant; values are parameters.
    text = (
        f"SELECT customer_id, {''.join(d + ', ' for d in dims)}{sql.bucket(definition.granularity)} AS bucket, "
        f"{', '.join(aggregates)} FROM {UsageRecord._meta.db_table} "
        f"WHERE usage_event_id = %s AND NOT voided AND NOT superseded "
        f'AND "timestamp" >= %s AND "timestamp" < %s{where} GROUP BY {group}'
    )
    params = [definition.usage_event_id, adapt(start), adapt(end), *filter_params]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        rows = cursor.fetchall()
    bools = {name for name in definition.group_by if type_parse(definition.fields[name]).base == "Bool"}
    results = []
    n_dims = len(dims)
    for row in rows:
        bucket = row[1 + n_dims]
        if isinstance(bucket, str):
            bucket = dt.datetime.fromisoformat(bucket).replace(tzinfo=dt.UTC)
        dimension = None
        if definition.group_by:
            dimension = {
                name: dimension_text(row[1 + i], boolean=name in bools) for i, name in enumerate(definition.group_by)
            }
        parts = row[2 + n_dims :]
        amount = average(parts[0], parts[1]) if aggregation == "avg" else to_decimal(parts[0])
        results.append(
            ComputedValue(
                customer_id=row[0],
                period_start=bucket.astimezone(dt.UTC),
                dimension=dimension,
                value=decimal_text(amount),
            )
        )
    return results


def dimension_text(value: Any, *, boolean: bool = False) -> str | None:
    """The text of a dimension value as stored and shown: None stays None, booleans are true/false,
    whole floats lose their `.0` (SQLite returns 3.0 where the data said 3).

    `boolean` says the column is a Bool field read without its type: SQLite's JSON gives 1/0 and
    PostgreSQL's `->>` gives 'true'/'false', so 1 and 'true' read as true, anything else as false.
    """
    if value is None:
        return None
    if boolean or isinstance(value, bool):
        return "true" if value in (True, 1, "true") else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- SQLite: exact aggregates in Python, registered on every new connection ---


class _DecimalAggregate:
    def __init__(self) -> None:
        self.result: Decimal | None = None

    def step(self, value: Any) -> None:
        number = to_decimal(value)
        if number is not None:
            self.result = number if self.result is None else self.combine(self.result, number)

    def combine(self, current: Decimal, number: Decimal) -> Decimal:
        raise NotImplementedError

    def finalize(self) -> str | None:
        return None if self.result is None else str(self.result)


class _Sum(_DecimalAggregate):
    def combine(self, current: Decimal, number: Decimal) -> Decimal:
        with localcontext() as context:
            context.prec = 60
            return current + number


class _Min(_DecimalAggregate):
    def combine(self, current: Decimal, number: Decimal) -> Decimal:
        return min(current, number)


class _Max(_DecimalAggregate):
    def combine(self, current: Decimal, number: Decimal) -> Decimal:
        return max(current, number)


class _Latest:
    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.value: Any = None

    def step(self, timestamp: str, record_id: int, value: Any) -> None:
        key = (timestamp, record_id)
        if self.key is None or key > self.key:
            self.key, self.value = key, value

    def finalize(self) -> str | None:
        number = to_decimal(self.value)
        return None if number is None else str(number)


def sqlite_functions_register(raw_connection: Any) -> None:
    raw_connection.create_aggregate("z_sum", 1, _Sum)
    raw_connection.create_aggregate("z_min", 1, _Min)
    raw_connection.create_aggregate("z_max", 1, _Max)
    raw_connection.create_aggregate("z_latest", 3, _Latest)
