"""The sandbox of SQL metrics (SPEC §5): parse, allow-list, rewrite, then run read-only under a time limit.

A keyword blocklist is not a sandbox, so the query is parsed with sqlglot (PostgreSQL's dialect) and
every node of the tree must be of an allow-listed kind: SELECT / WITH / UNION and their clauses,
operators, literals, casts to ordinary types and the functions of `ALLOWED_FUNCTIONS`. Every table
the query names must be a CTE in scope or one of the organisation's usage events; each usage event is
replaced by a subquery over `usage_usagerecord` restricted to that event's current records and
exposing only `id`, `customer_id`, `timestamp` and the typed data fields, and every column name
must be one of those or a name the query defines itself. The SQL that runs is generated from that
tree, never from the user's text, so nothing the user wrote reaches the database unparsed. The
period placeholders become %s parameters; only our own integers and schema field names are pasted.

Decisions:
- Window functions are allowed (row_number, rank, dense_rank, lag, lead, first_value, last_value and
  the allowed aggregates OVER a window): they read the same rows and cannot multiply them.
- WITH RECURSIVE is refused: it is the one way to produce rows without reading any, and no metric
  needs it. generate_series, VALUES and every set-returning function are refused for the same reason.
- now(), random() and the like are refused: a value must be recomputable from raw records (SPEC §5).
- percentile_cont, DISTINCT ON, string_agg, to_char, arrays and JSON operators are refused: they do
  not run on SQLite, and a query must run on either database.

On SQLite, PostgreSQL's date functions are translated (date_trunc, extract, ::timestamp, ± INTERVAL,
concat) and timestamps are text in Django's 'YYYY-MM-DD HH:MM:SS[.ffffff]' UTC form; arithmetic on
Float64 and Decimal fields is binary floating point there (SQLite has no exact numeric type).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Any, NoReturn

import sqlglot
from django.db import DatabaseError, connection, transaction
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import ErrorLevel, SqlglotError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from metrics.engine.builder import dimension_text
from usage.models import UsageRecord
from usage.schema import FIELD_NAME_RE, type_parse
from zenskar_site.lib.errors import ValidationFailed

MAX_SQL_LENGTH = 20_000
PLACEHOLDER_NAMES = ("period_start", "period_end")
PLACEHOLDERS_TEXT = "{{ period_start }} and {{ period_end }}"
REQUIRED_COLUMNS = ("customer_id", "quantity")
OPTIONAL_COLUMNS = ("dimension",)
ALLOWED_FUNCTIONS = (
    "count, sum, min, max, avg, coalesce, nullif, greatest, least, abs, round, floor, ceil, ceiling, "
    "date_trunc, extract, date_part, lower, upper, length, substring, substr, concat, trim, "
    "row_number, rank, dense_rank, lag, lead, first_value, last_value"
)
TRUNC_UNITS = frozenset({"second", "minute", "hour", "day", "week", "month", "quarter", "year"})
EXTRACT_UNITS = frozenset(
    {"epoch", "year", "quarter", "month", "day", "hour", "minute", "second", "dow", "isodow", "doy"}
)
INTERVAL_UNITS = frozenset({"second", "minute", "hour", "day", "week", "month", "year"})

_RECORD_TABLE = UsageRecord._meta.db_table
_PLACEHOLDER_RE = re.compile(r"\{\{\s*(period_start|period_end)\s*\}\}")
_BRACES_RE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

_STRUCTURE: frozenset[type[exp.Expression]] = frozenset(
    {
        exp.Select, exp.Union, exp.Intersect, exp.Except, exp.With, exp.CTE, exp.Subquery, exp.From,
        exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered, exp.Limit, exp.Offset,
        exp.Fetch, exp.LimitOptions, exp.Distinct, exp.Table, exp.TableAlias, exp.Alias, exp.Column,
        exp.Identifier, exp.Star, exp.Paren, exp.Tuple, exp.Literal, exp.Boolean, exp.Null,
        exp.Exists, exp.Window, exp.WindowSpec, exp.Filter, exp.Placeholder, exp.Var,
    }
)  # fmt: skip
_OPERATORS: frozenset[type[exp.Expression]] = frozenset(
    {
        exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT,
        exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.And, exp.Or, exp.Not, exp.Is, exp.In, exp.Between,
        exp.Like, exp.ILike, exp.Case, exp.If, exp.DPipe, exp.Cast, exp.DataType, exp.DataTypeParam,
        exp.Interval,
    }
)  # fmt: skip
_FUNCTIONS: frozenset[type[exp.Expression]] = frozenset(
    {
        exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg, exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least,
        exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.TimestampTrunc, exp.DateTrunc, exp.Extract, exp.Lower,
        exp.Upper, exp.Length, exp.Substring, exp.Concat, exp.Trim, exp.RowNumber, exp.Rank, exp.DenseRank,
        exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue,
    }
)  # fmt: skip
_ALLOWED_NODES = _STRUCTURE | _OPERATORS | _FUNCTIONS
_CAST_TYPES = frozenset(
    exp.DataType.Type[name]
    for name in (
        "SMALLINT", "INT", "BIGINT", "DECIMAL", "DOUBLE", "FLOAT", "TEXT", "VARCHAR", "CHAR", "BOOLEAN",
        "DATE", "TIMESTAMP", "TIMESTAMPTZ",
    )
)  # fmt: skip
_QUERY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_TABLE_ARGS = frozenset({"this", "alias"})


class _SandboxSQLite(SQLite):
    """SQLite quoting identifiers with backticks: a double-quoted name that matches no column would be
    read as a string literal (SQLite's DQS quirk), so a misspelt column would silently be text."""

    class Tokenizer(SQLite.Tokenizer):
        IDENTIFIERS = ["`", '"', ("[", "]")]


# Each data type as PostgreSQL and SQLite read it out of the JSON `data` column; `{v}` is the raw value.
_PG_TYPES = {
    "Int64": "CAST({v} AS BIGINT)",
    "Float64": "CAST({v} AS DOUBLE PRECISION)",
    "Decimal": "CAST({v} AS NUMERIC)",
    "Bool": "CAST({v} AS BOOLEAN)",
    "Date32": "CAST({v} AS DATE)",
    "DateTime64": "CAST({v} AS TIMESTAMPTZ)",
    "String": "{v}",
    "UUID": "{v}",
}
_SQLITE_TYPES = {
    "Int64": "CAST({v} AS INTEGER)",
    "Float64": "CAST({v} AS REAL)",
    "Decimal": "CAST({v} AS NUMERIC)",
    "Bool": "CAST({v} AS INTEGER)",
    "Date32": "CAST({v} AS TEXT)",
    # Stored as '2026-11-20T14:03:12[.ffffff]Z' (always UTC): shown in Django's form, like "timestamp".
    "DateTime64": "replace(replace({v}, 'T', ' '), 'Z', '')",
    "String": "CAST({v} AS TEXT)",
    "UUID": "CAST({v} AS TEXT)",
}


@dataclass(frozen=True)
class SandboxTable:
    slug: str  # the usage event's api_slug: the table name the query writes (quoted when it has '-')
    usage_event_id: int
    fields: dict[str, str]  # data field -> type text, e.g. {"region": "Nullable(String)"}


@dataclass(frozen=True)
class CompiledQuery:
    sql: str  # in the target dialect, with %s placeholders (Django cursor style)
    param_names: list[str]  # for each %s in order: "period_start" or "period_end"
    sources: list[str]  # slugs of the usage events the query reads
    has_dimension: bool


class SandboxError(ValidationFailed):
    """A SQL metric that is refused by the sandbox, or that failed or was stopped while running."""


def _refuse(message: str) -> NoReturn:
    raise SandboxError({"sql": [message]})


# --- compiling ---


def sql_metric_compile(*, sql: str, tables: dict[str, SandboxTable], vendor: str) -> CompiledQuery:
    """Check a SQL metric against the sandbox and rewrite it for `vendor`; runs no query."""
    if vendor not in ("postgresql", "sqlite"):
        raise ValueError(f"Unsupported database vendor {vendor!r}.")
    if not isinstance(sql, str) or not sql.strip():
        _refuse("Write one SELECT query returning customer_id and quantity.")
    if len(sql) > MAX_SQL_LENGTH:
        _refuse(f"The query is longer than {MAX_SQL_LENGTH} characters.")
    # A random name per compile: nothing the user writes can collide with the placeholders' stand-ins.
    nonce = secrets.token_hex(8)
    marks = {name: f"zsp{nonce}{name}" for name in PLACEHOLDER_NAMES}
    text = _PLACEHOLDER_RE.sub(lambda match: ":" + marks[match.group(1)], sql)
    leftover = _BRACES_RE.search(text)
    if leftover:
        _refuse(f"Unknown placeholder {leftover.group(0)}: the placeholders are {PLACEHOLDERS_TEXT}.")
    try:
        return _compile(text=text, tables=tables, vendor=vendor, nonce=nonce, marks=marks)
    except RecursionError:
        _refuse("The query is nested too deeply.")


def _compile(
    *, text: str, tables: dict[str, SandboxTable], vendor: str, nonce: str, marks: dict[str, str]
) -> CompiledQuery:
    root = _parse(text, marks, tables)
    root = normalize_identifiers(root, dialect="postgres")
    walker = _Walker(tables=tables, marks=marks, nonce=nonce)
    walker.visit(root, frozenset())
    walker.check_columns()
    columns = _output_columns(root)

    for placeholder in walker.placeholders:
        placeholder.replace(exp.Var(this=placeholder.name))
    table_sql: dict[str, str] = {}
    for index, (node, table) in enumerate(walker.references):
        token = f"zst{nonce}n{index}"
        quote = '"' if vendor == "postgresql" else "`"
        table_sql[f"{quote}{token}{quote}"] = _base_sql(table, vendor)
        alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(table.slug, quoted=True))
        node.replace(exp.Table(this=exp.to_identifier(token, quoted=True), alias=alias))

    wrapper: exp.Expression = exp.select(*(exp.column(name, quoted=True) for name in columns)).from_(
        exp.Subquery(this=root, alias=exp.TableAlias(this=exp.to_identifier("zs_metric", quoted=True)))
    )
    dialect: str | type[SQLite] = "postgres"
    if vendor == "sqlite":
        dialect = _SandboxSQLite
        wrapper = _post_order(wrapper, _sqlite_translate)
        if wrapper.find(exp.Interval):
            _refuse("On SQLite, INTERVAL is only supported as timestamp + INTERVAL 'N unit' (or -).")
    try:
        generated = wrapper.sql(dialect=dialect, identify=True, comments=False, unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        _refuse(f"The query uses something this database cannot run: {_clean(str(exc), marks)}")

    # `%` is the parameter marker of Django's cursors: the text's own are doubled before ours go in.
    generated = generated.replace("%", "%%")
    for token, base in table_sql.items():
        if token not in generated:  # pragma: no cover - every reference is generated
            raise AssertionError(f"{token} vanished from the generated SQL")
        generated = generated.replace(token, base)
    by_mark = {mark: name for name, mark in marks.items()}
    param_names: list[str] = []

    def bind(match: re.Match[str]) -> str:
        param_names.append(by_mark[match.group(0)])
        return "%s"

    generated = re.sub("|".join(marks.values()), bind, generated)
    sources = list(dict.fromkeys(table.slug for _, table in walker.references))
    return CompiledQuery(sql=generated, param_names=param_names, sources=sources, has_dimension="dimension" in columns)


def _parse(text: str, marks: dict[str, str], tables: dict[str, SandboxTable]) -> exp.Expression:
    try:
        statements = [statement for statement in sqlglot.parse(text, read="postgres") if statement is not None]
    except SqlglotError as exc:
        unquoted = [
            slug for slug in tables if "-" in slug and re.search(rf'(?<!["\w-]){re.escape(slug)}(?![\w"-])', text)
        ]
        hint = f" Quote table names that contain '-': \"{unquoted[0]}\"." if unquoted else ""
        _refuse(f"The query does not parse: {_clean(str(exc), marks)}{hint}")
    if not statements:
        _refuse("Write one SELECT query returning customer_id and quantity.")
    if len(statements) > 1:
        _refuse(f"Write exactly one statement (found {len(statements)}); remove the ';' between them.")
    root = statements[0]
    while isinstance(root, exp.Subquery) and not root.args.get("alias"):
        root = root.this
    if not isinstance(root, _QUERY_ROOTS):
        kind = root.name.split()[0].upper() if isinstance(root, exp.Command) and root.name else root.key.upper()
        _refuse(f"Only a SELECT query is allowed (WITH and UNION included), not {kind}.")
    return root


def _clean(message: str, marks: dict[str, str]) -> str:
    message = _ANSI_RE.sub("", message).strip().splitlines()[0] if message.strip() else "invalid syntax"
    for name, mark in marks.items():
        message = message.replace(":" + mark, f"{{{{ {name} }}}}").replace(mark, f"{{{{ {name} }}}}")
    return message[:300]


class _Walker:
    """Checks every node against the allow-list and resolves every table name in its CTE scope."""

    def __init__(self, *, tables: dict[str, SandboxTable], marks: dict[str, str], nonce: str) -> None:
        self.tables = tables
        self.marks = set(marks.values())
        self.nonce = nonce
        self.references: list[tuple[exp.Table, SandboxTable]] = []
        self.placeholders: list[exp.Placeholder] = []
        self.columns: list[exp.Column] = []
        self.defined: set[str] = set()  # names the query gives itself: AS aliases, t(a, b) column lists

    def visit(self, node: exp.Expression, ctes: frozenset[str]) -> None:
        with_ = node.args.get("with_")
        if isinstance(with_, exp.With):
            ctes = self.visit_with(with_, ctes)
        self.allow(node)
        if isinstance(node, exp.Table):
            self.resolve(node, ctes)
            return
        for key, value in node.args.items():
            if key == "with_":
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, exp.Expression):
                    self.visit(child, ctes)

    def visit_with(self, with_: exp.With, ctes: frozenset[str]) -> frozenset[str]:
        if with_.args.get("recursive"):
            _refuse(
                "WITH RECURSIVE is not allowed: a metric reads its usage events' records, it does not generate rows."
            )
        self.allow(with_)
        for cte in with_.expressions:
            self.allow(cte)
            name = cte.alias_or_name
            if name.lower() == _RECORD_TABLE:
                _refuse(f"A CTE cannot be named {name!r}.")
            # A CTE sees the ones before it, not itself nor the ones after (no RECURSIVE): a name it
            # reads that is not in scope must be a usage event, as PostgreSQL would resolve it.
            self.visit(cte.this, ctes)
            ctes = ctes | {name}
        return ctes

    def allow(self, node: exp.Expression) -> None:
        kind = type(node)
        if kind not in _ALLOWED_NODES:
            _refuse(f"{_describe(node)} is not allowed in a metric query. Allowed functions: {ALLOWED_FUNCTIONS}.")
        if isinstance(node, (exp.Literal, exp.Identifier)) and self.nonce in str(node.this):
            _refuse(f"Write {PLACEHOLDERS_TEXT} as values, outside quotes.")
        if isinstance(node, exp.Column):
            if not node.is_star:
                self.columns.append(node)
        elif isinstance(node, exp.Alias):
            self.defined.add(node.alias)
        elif isinstance(node, exp.TableAlias):
            self.defined.update(column.name for column in node.columns)
        elif isinstance(node, exp.Placeholder):
            if node.name not in self.marks:
                _refuse(f"Parameters ({node.sql(dialect='postgres')}) are not allowed; use {PLACEHOLDERS_TEXT}.")
            self.placeholders.append(node)
        elif isinstance(node, exp.Var):  # printed as written: only as the unit of a date function
            parent = node.parent
            is_unit = isinstance(parent, exp.Extract) and node.arg_key == "this"
            is_unit |= isinstance(parent, (exp.TimestampTrunc, exp.DateTrunc, exp.Interval)) and node.arg_key == "unit"
            if not is_unit:
                _refuse(f"{node.name} is not allowed here.")
        elif isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
            unit = node.text("unit").lower()
            if unit not in TRUNC_UNITS:
                _refuse(f"date_trunc('{unit}', ...) is not supported; use one of {', '.join(sorted(TRUNC_UNITS))}.")
        elif isinstance(node, exp.Interval):
            unit = node.text("unit").lower()
            if not isinstance(node.this, exp.Literal) or (unit and unit.removesuffix("s") not in INTERVAL_UNITS):
                _refuse(f"Write intervals as INTERVAL '3 days' (units: {', '.join(sorted(INTERVAL_UNITS))}).")
        elif isinstance(node, exp.Extract):
            unit = node.name.lower()
            if unit not in EXTRACT_UNITS:
                _refuse(f"extract({unit} FROM ...) is not supported; use one of {', '.join(sorted(EXTRACT_UNITS))}.")
        elif isinstance(node, exp.DataType):
            if node.this not in _CAST_TYPES:
                _refuse(
                    f"Casting to {node.sql(dialect='postgres')} is not allowed; "
                    "cast to a number, text, boolean, date or timestamp type."
                )
        elif isinstance(node, exp.Distinct) and node.args.get("on"):
            _refuse("DISTINCT ON is not allowed (it does not run on SQLite); use row_number() OVER (...).")

    def resolve(self, node: exp.Table, ctes: frozenset[str]) -> None:
        identifier = node.this
        if not isinstance(identifier, exp.Identifier):
            _refuse(f"{_describe(identifier)} is not allowed in FROM; read your usage events by their API slug.")
        if node.args.get("db") or node.args.get("catalog"):
            _refuse(
                f"Schema-qualified names such as {node.sql(dialect='postgres')} are not allowed; "
                "read your usage events by their API slug."
            )
        extra = [key for key, value in node.args.items() if value and key not in _TABLE_ARGS]
        if extra:
            _refuse(f"{node.sql(dialect='postgres')} is not allowed: write a table as its name and an optional alias.")
        name = identifier.name
        if name in ctes:
            return
        table = self.tables.get(name)
        if table is None:
            known = ", ".join(
                f'"{slug}"' if not re.fullmatch(r"[a-z_][a-z0-9_]*", slug) else slug for slug in sorted(self.tables)
            )
            hint = next(
                (
                    f" Did you mean \"{slug}\"? Quote names with capitals or '-'."
                    for slug in self.tables
                    if slug.lower() == name.lower()
                ),
                "",
            )
            _refuse(f"Unknown table {name!r}.{hint} The tables are your usage events: {known or 'none yet'}.")
        self.references.append((node, table))

    def check_columns(self) -> None:
        # Every column name must be one a usage event exposes or one the query defines: besides a
        # clear message, this shuts PostgreSQL's attribute notation (`t.f` calling f(t)) out.
        tables = {table.slug: table for _, table in self.references}
        exposed = {name for table in tables.values() for name in ("id", "customer_id", "timestamp", *table.fields)}
        for column in self.columns:
            if column.name not in exposed and column.name not in self.defined:
                listing = "; ".join(
                    f"{slug}: {', '.join(('id', 'customer_id', 'timestamp', *table.fields))}"
                    for slug, table in tables.items()
                )
                _refuse(f"Unknown column {column.name!r}. The columns are {listing or 'those of your usage events'}.")


def _describe(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return f"The function {node.name}()"
    if isinstance(node, exp.Lock):
        return "A locking clause (FOR UPDATE / FOR SHARE)"
    if isinstance(node, exp.Into):
        return "SELECT ... INTO"
    if isinstance(node, exp.Parameter):
        return f"The parameter {node.sql(dialect='postgres')}"
    try:
        snippet = node.sql(dialect="postgres")
    except SqlglotError:
        snippet = type(node).__name__
    call = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", snippet)
    if isinstance(node, exp.Func) and call:
        return f"The function {call.group(1)}()"
    return f"`{snippet[:60]}{'...' if len(snippet) > 60 else ''}`"


def _output_columns(root: exp.Expression) -> list[str]:
    assert isinstance(root, exp.Query)
    names: list[str] = []
    for projection in root.selects:
        if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and projection.is_star):
            _refuse("List the result columns by name (customer_id, quantity and optionally dimension), not *.")
        name = projection.alias_or_name if isinstance(projection, (exp.Alias, exp.Column)) else ""
        if not name:
            _refuse(
                f"Name the result column {projection.sql(dialect='postgres')[:60]} "
                "with AS quantity (or customer_id, dimension)."
            )
        names.append(name)
    allowed = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    problems = []
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unexpected = [name for name in names if name not in allowed]
    if unexpected:
        problems.append(f"unexpected {', '.join(repr(name) for name in unexpected)}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        problems.append(f"repeated {', '.join(duplicated)}")
    if problems:
        _refuse(
            f"The query must return the columns customer_id, quantity and optionally dimension: {'; '.join(problems)}."
        )
    return [name for name in allowed if name in names]


def _base_sql(table: SandboxTable, vendor: str) -> str:
    """The subquery that stands for a usage event: its current records with their typed fields."""
    pg = vendor == "postgresql"
    q = '"' if pg else "`"
    columns = [f"{q}id{q}", f"{q}customer_id{q}", f"{q}timestamp{q}"]
    types = _PG_TYPES if pg else _SQLITE_TYPES
    for field, type_text in table.fields.items():
        # Names reach the text only after matching the schema's own field-name pattern.
        if not FIELD_NAME_RE.match(field):
            raise ValueError(f"Invalid field name {field!r} in the schema of {table.slug!r}.")
        raw = f"({q}data{q} ->> '{field}')" if pg else f"json_extract({q}data{q}, '$.{field}')"
        columns.append(f"{types[type_parse(type_text).base].format(v=raw)} AS {q}{field}{q}")
    return (
        f"(SELECT {', '.join(columns)} FROM {q}{_RECORD_TABLE}{q} WHERE {q}usage_event_id{q} = "
        f"{int(table.usage_event_id)} AND NOT {q}voided{q} AND NOT {q}superseded{q})"
    )


# --- SQLite: PostgreSQL's date functions in SQLite's terms ---


def _post_order(node: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _post_order(value, fn))
        elif isinstance(value, list):
            node.set(key, [_post_order(item, fn) if isinstance(item, exp.Expression) else item for item in value])
    return fn(node)


def _fn(name: str, *args: exp.Expression | str) -> exp.Expression:
    return exp.Anonymous(
        this=name, expressions=[exp.Literal.string(arg) if isinstance(arg, str) else arg for arg in args]
    )


def _as_integer(value: exp.Expression) -> exp.Expression:
    return exp.Cast(this=value, to=exp.DataType.build("INTEGER"))


_SQLITE_TRUNC = {
    "second": "%Y-%m-%d %H:%M:%S",
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
    "month": "%Y-%m-01 00:00:00",
    "year": "%Y-01-01 00:00:00",
}
_SQLITE_EXTRACT = {
    "year": "%Y",
    "month": "%m",
    "day": "%d",
    "hour": "%H",
    "minute": "%M",
    "dow": "%w",
    "doy": "%j",
    "epoch": "%s",
}


def _sqlite_translate(node: exp.Expression) -> exp.Expression:
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
        zone = node.args.get("zone")
        if zone is not None and zone.name.upper() != "UTC":
            _refuse("On SQLite, date_trunc only works in UTC.")
        return _sqlite_trunc(node.text("unit").lower(), node.this)
    if isinstance(node, exp.Extract):
        return _sqlite_extract(node.name.lower(), node.expression)
    if isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
        return _fn("datetime", node.this)
    if isinstance(node, exp.Concat):  # PostgreSQL's concat skips NULLs; SQLite 3.40 has no concat
        parts: list[exp.Expression] = [
            exp.Coalesce(this=exp.Cast(this=part, to=exp.DataType.build("TEXT")), expressions=[exp.Literal.string("")])
            for part in node.expressions
        ]
        result = parts[0]
        for part in parts[1:]:
            result = exp.DPipe(this=result, expression=part)
        return exp.Paren(this=result)
    if isinstance(node, (exp.Add, exp.Sub)):
        left, right = node.this, node.expression
        if isinstance(left, exp.Interval) and isinstance(node, exp.Add):
            left, right = right, left
        if isinstance(right, exp.Interval):
            return _fn("datetime", left, _sqlite_modifier(right, negate=isinstance(node, exp.Sub)))
    return node


def _sqlite_trunc(unit: str, value: exp.Expression) -> exp.Expression:
    if unit == "week":  # to Monday, as PostgreSQL: the next Sunday (or today), then six days back
        return _fn("strftime", "%Y-%m-%d 00:00:00", value, "weekday 0", "-6 days")
    if unit == "quarter":
        month = exp.Add(
            this=exp.Mul(
                this=exp.Paren(
                    this=exp.Div(
                        this=exp.Sub(this=_as_integer(_fn("strftime", "%m", value)), expression=exp.Literal.number(1)),
                        expression=exp.Literal.number(3),
                    )
                ),
                expression=exp.Literal.number(3),
            ),
            expression=exp.Literal.number(1),
        )
        return _fn("printf", "%s-%02d-01 00:00:00", _fn("strftime", "%Y", value), month)
    return _fn("strftime", _SQLITE_TRUNC[unit], value)


def _sqlite_extract(unit: str, value: exp.Expression) -> exp.Expression:
    if unit == "second":
        return exp.Cast(this=_fn("strftime", "%f", value), to=exp.DataType.build("REAL"))
    if unit == "isodow":  # Monday 1 .. Sunday 7
        weekday = _as_integer(_fn("strftime", "%w", value))
        return exp.Add(
            this=exp.Mod(
                this=exp.Paren(this=exp.Add(this=weekday, expression=exp.Literal.number(6))),
                expression=exp.Literal.number(7),
            ),
            expression=exp.Literal.number(1),
        )
    if unit == "quarter":
        month = _as_integer(_fn("strftime", "%m", value))
        return exp.Div(
            this=exp.Paren(this=exp.Add(this=month, expression=exp.Literal.number(2))), expression=exp.Literal.number(3)
        )
    return _as_integer(_fn("strftime", _SQLITE_EXTRACT[unit], value))


def _sqlite_modifier(interval: exp.Interval, *, negate: bool) -> str:
    unit = interval.text("unit").lower().rstrip("s")
    amount_node = interval.this
    if not unit or unit not in INTERVAL_UNITS or not isinstance(amount_node, exp.Literal):
        _refuse("On SQLite, write intervals as INTERVAL 'N unit' with one unit (second ... year).")
    try:
        amount = Decimal(amount_node.this)
    except InvalidOperation:
        _refuse(f"The interval {interval.sql(dialect='postgres')} is not a number of {unit}s.")
    if not amount.is_finite():
        _refuse(f"The interval {interval.sql(dialect='postgres')} is not a number of {unit}s.")
    if unit == "week":
        amount, unit = amount * 7, "day"
    if negate:
        amount = -amount
    return f"{'+' if amount >= 0 else ''}{amount} {unit}s"


# --- running ---


def sql_metric_execute(
    *,
    compiled: CompiledQuery,
    period_start: dt.datetime,
    period_end: dt.datetime,
    timeout_ms: int = 5000,
    max_rows: int = 100_000,
) -> list[tuple[str, str | None, str | None]]:
    """Run a compiled SQL metric for one period, read-only and under a time limit.

    Each row is (customer_id, quantity as an exact decimal string or None, dimension or None).
    """
    for moment in (period_start, period_end):
        if moment.tzinfo is None:
            raise ValueError("period_start and period_end must be aware datetimes.")
    timeout_ms, max_rows = int(timeout_ms), int(max_rows)
    if timeout_ms <= 0 or max_rows <= 0:
        raise ValueError("timeout_ms and max_rows must be positive.")
    values = {"period_start": period_start, "period_end": period_end}
    if connection.vendor == "postgresql":
        params: list[Any] = [values[name] for name in compiled.param_names]
        runner = _run_postgresql
    else:
        params = [connection.ops.adapt_datetimefield_value(values[name]) for name in compiled.param_names]
        runner = _run_sqlite
    # The wrapper compiled around the query has no LIMIT: this one bounds what is fetched at all.
    sql = f"{compiled.sql} LIMIT {max_rows + 1}"
    rows = runner(sql, params, timeout_ms, max_rows)
    if len(rows) > max_rows:
        _refuse(f"The query returned more than {max_rows} rows; aggregate per customer (GROUP BY customer_id).")
    return [_row(row, has_dimension=compiled.has_dimension) for row in rows]


def _run_postgresql(sql: str, params: list[Any], timeout_ms: int, max_rows: int) -> list[Sequence[Any]]:
    try:
        with transaction.atomic():
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL transaction_read_only = on")
                    cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                    cursor.execute(sql, params)
                    return list(cursor.fetchmany(max_rows + 1))
            finally:
                # SET LOCAL lasts until the end of the whole transaction, even past a released
                # savepoint, and read-only cannot be turned off again: rolling this block back (it
                # wrote nothing) is what leaves an enclosing transaction writable.
                transaction.set_rollback(True)
    except DatabaseError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) == "57014" or "statement timeout" in str(exc):
            _refuse(f"The query was stopped after {timeout_ms} ms.")
        _refuse(f"The query failed: {_first_line(exc)}")


def _run_sqlite(sql: str, params: list[Any], timeout_ms: int, max_rows: int) -> list[Sequence[Any]]:
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    deadline = time.monotonic() + timeout_ms / 1000
    stopped = False

    def progress() -> int:
        nonlocal stopped
        stopped = time.monotonic() > deadline
        return 1 if stopped else 0  # non-zero aborts the statement

    try:
        with transaction.atomic():
            try:
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA query_only")
                    was_query_only = bool(cursor.fetchone()[0])
                    cursor.execute("PRAGMA query_only = ON")
                    raw.set_progress_handler(progress, 1000)
                    try:
                        cursor.execute(sql, params)
                        return list(cursor.fetchmany(max_rows + 1))
                    finally:
                        raw.set_progress_handler(None, 0)
                        cursor.execute(f"PRAGMA query_only = {'ON' if was_query_only else 'OFF'}")
            finally:
                transaction.set_rollback(True)  # nothing to keep; an enclosing transaction is left as it was
    except DatabaseError as exc:
        if stopped:
            _refuse(f"The query was stopped after {timeout_ms} ms.")
        _refuse(f"The query failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _row(row: Sequence[Any], *, has_dimension: bool) -> tuple[str, str | None, str | None]:
    customer_id = row[0]
    if customer_id is None:
        _refuse("The query returned a row whose customer_id is NULL.")
    dimension = dimension_text(row[2]) if has_dimension else None
    return str(customer_id), _quantity_text(row[1]), dimension


def _quantity_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        number = Decimal(int(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            _refuse(f"The query returned a quantity that is not a finite number ({value!r}).")
        number = Decimal(repr(value))
    elif isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            _refuse(f"The query returned a quantity that is not a number ({value[:40]!r}).")
    else:
        _refuse(f"The query returned a quantity that is not a number ({type(value).__name__}).")
    if not number.is_finite():
        _refuse(f"The query returned a quantity that is not a finite number ({number}).")
    # normalize() rounds to the context's precision: give it every digit so the text stays exact.
    text = format(number.normalize(Context(prec=max(28, len(number.as_tuple().digits)))), "f")
    return "0" if text == "-0" else text
