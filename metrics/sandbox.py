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

Rules beyond the allow-list:
- Functions are reached only through allow-listed function nodes. PostgreSQL also reads `x.name` as
  the call `name(x)` when the relation `x` has no column `name` (attribute notation), so a qualified
  column `x.name` must be a column of the relation `x`: a usage event's exposed columns, or the
  result columns of the subquery or CTE so named (after a column list `AS x(a, b)`), in every
  enclosing SELECT's FROM clause where an `x` is found. Anything unsure (a `*`, an unnamed result
  column) counts as no column, so the rule only ever refuses more. `(x).name` and `a.b.c` are refused.
- A value must be recomputable from raw records (SPEC §5), so nothing may read the clock: now(),
  current_*, localtime*, random() and the like are not allow-listed; a string literal may not
  contain the word now, today, tomorrow, yesterday, infinity or epoch (PostgreSQL reads them as moments
  wherever a text meets a date or time, even without a cast); and text computed while the query runs
  (||, lower(), a String field...) never becomes a date: CAST(... AS DATE/TIMESTAMP[TZ]), date_trunc,
  extract and ± INTERVAL take a date or timestamp column, a placeholder, a string literal, or
  date_trunc / CAST / ± INTERVAL of those (see `_Kinds`).
- Anything the checks do not know is refused with a SandboxError naming it, never another exception.

Decisions:
- Window functions are allowed (row_number, rank, dense_rank, lag, lead, first_value, last_value and
  the allowed aggregates OVER a window): they read the same rows and cannot multiply them.
- WITH RECURSIVE is refused: it is the one way to produce rows without reading any, and no metric
  needs it. generate_series, VALUES and every set-returning function are refused for the same reason.
- percentile_cont, DISTINCT ON, string_agg, to_char, arrays and JSON operators are refused: they do
  not run on SQLite, and a query must run on either database.

On SQLite, PostgreSQL's date functions are translated (date_trunc, extract, ::timestamp, ± INTERVAL,
concat) and timestamps are text in Django's 'YYYY-MM-DD HH:MM:SS[.ffffff]' UTC form; each translation
answers as PostgreSQL does (microseconds kept, month ends clamped), and what SQLite cannot answer the
same way is refused there as PostgreSQL-only: timestamps, floats, decimals and booleans turned into
text, date arithmetic other than ± INTERVAL, fractional intervals, date_trunc in another time zone,
literal dates not in ISO 8601 UTC. A dimension comes back as the same text from either database.
Arithmetic on Float64 and Decimal fields is binary floating point on SQLite (it has no exact numeric
type). tests/metrics/test_sandbox_corpus.py runs one corpus of queries on both databases.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
# What checking and rewriting a query may cost is bounded before the checks start (they run in the web
# process, before any statement timeout applies): no real metric comes near these, and a hostile
# 20,000-character query of hundreds of CTEs or table references is refused after parsing alone.
MAX_WITH_QUERIES = 30
MAX_TABLE_REFERENCES = 60
MAX_QUERY_NODES = 3000
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
    boolean_dimension: bool = False  # SQLite answers a boolean as 1/0: read it as true/false


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
    _check_size(root)
    root = normalize_identifiers(root, dialect="postgres")
    walker = _Walker(tables=tables, marks=marks, nonce=nonce)
    walker.visit(root, {})
    walker.check_columns()
    walker.check_qualified()
    columns = _output_columns(root)
    kinds = _Kinds(walker)
    kinds.check(root, vendor)
    assert isinstance(root, exp.Query)
    dimension = next((p for p in root.selects if p.alias_or_name == "dimension"), None)
    boolean_dimension = dimension is not None and kinds.of(dimension) == "bool"
    if vendor == "sqlite":
        kinds.prepare_sqlite(root)

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
            _refuse(
                "On SQLite, INTERVAL is only supported as timestamp + INTERVAL 'N unit' (or -); "
                "other uses are PostgreSQL-only."
            )
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
    return CompiledQuery(
        sql=generated,
        param_names=param_names,
        sources=sources,
        has_dimension="dimension" in columns,
        boolean_dimension=boolean_dimension,
    )


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


def _check_size(root: exp.Expression) -> None:
    with_queries = tables = 0
    for nodes, node in enumerate(root.walk(), start=1):
        if isinstance(node, exp.CTE):
            with_queries += 1
        elif isinstance(node, exp.Table):
            tables += 1
        if nodes > MAX_QUERY_NODES:
            _refuse(f"The query is too large: more than {MAX_QUERY_NODES} syntax elements.")
    if with_queries > MAX_WITH_QUERIES:
        _refuse(f"The query defines {with_queries} WITH queries; at most {MAX_WITH_QUERIES} are allowed.")
    if tables > MAX_TABLE_REFERENCES:
        _refuse(f"The query reads {tables} tables; at most {MAX_TABLE_REFERENCES} table references are allowed.")


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
        self.aliases: list[exp.Alias] = []
        self.listed: set[str] = set()  # names of t(a, b) column lists, whose values are of no known kind
        # What each table reference reads, by id() of its node (the tree is not changed while checking).
        self.usage_event_of: dict[int, SandboxTable] = {}
        self.cte_of: dict[int, exp.CTE] = {}

    def visit(self, node: exp.Expression, ctes: dict[str, exp.CTE]) -> None:
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

    def visit_with(self, with_: exp.With, ctes: dict[str, exp.CTE]) -> dict[str, exp.CTE]:
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
            alias = cte.args.get("alias")
            if isinstance(alias, exp.TableAlias):
                self.visit(alias, ctes)
            ctes = {**ctes, name: cte}
        return ctes

    def allow(self, node: exp.Expression) -> None:
        kind = type(node)
        if kind not in _ALLOWED_NODES:
            _refuse(f"{_describe(node)} is not allowed in a metric query. Allowed functions: {ALLOWED_FUNCTIONS}.")
        if isinstance(node, (exp.Literal, exp.Identifier)) and self.nonce in str(node.this):
            _refuse(f"Write {PLACEHOLDERS_TEXT} as values, outside quotes.")
        if isinstance(node, exp.Literal) and node.is_string:
            _check_moment_words(node.this)
        if isinstance(node, exp.Column):
            if node.args.get("db") or node.args.get("catalog"):
                _refuse(f"{_describe(node)}: write a column as name or relation.name.")
            if not node.is_star:
                self.columns.append(node)
        elif isinstance(node, exp.Alias):
            self.defined.add(node.alias)
            self.aliases.append(node)
        elif isinstance(node, exp.TableAlias):
            names = {column.name for column in node.columns}
            self.defined.update(names)
            self.listed.update(names)
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

    def resolve(self, node: exp.Table, ctes: dict[str, exp.CTE]) -> None:
        if node.args.get("db") or node.args.get("catalog"):
            _refuse(
                f"Schema-qualified names such as {_sql_text(node)} are not allowed; "
                "read your usage events by their API slug."
            )
        # Before looking at the name: ROWS FROM (...) has none, and holds function calls.
        extra = [key for key, value in node.args.items() if value and key not in _TABLE_ARGS]
        if extra:
            _refuse(f"{_describe(node)} is not allowed: write a table as its name and an optional alias.")
        identifier = node.this
        if not isinstance(identifier, exp.Identifier):
            _refuse(f"{_describe(identifier)} is not allowed in FROM; read your usage events by their API slug.")
        alias = node.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            self.visit(alias, ctes)
        name = identifier.name
        if name in ctes:
            self.cte_of[id(node)] = ctes[name]
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
        self.usage_event_of[id(node)] = table

    def check_columns(self) -> None:
        # Every column name must be one a usage event exposes or one the query defines.
        tables = {table.slug: table for _, table in self.references}
        exposed = {name for table in tables.values() for name in _exposed(table)}
        for column in self.columns:
            if column.name not in exposed and column.name not in self.defined:
                listing = "; ".join(f"{slug}: {', '.join(_exposed(table))}" for slug, table in tables.items())
                _refuse(f"Unknown column {column.name!r}. The columns are {listing or 'those of your usage events'}.")

    def check_qualified(self) -> None:
        """`x.name` must be a column of every relation `x` may name where it is written.

        PostgreSQL reads `x.name` as the call `name(x)` when the relation `x` has no column `name`
        (attribute notation), so a name defined anywhere else in the query would reach any function.
        The relations are those of the FROM clauses of every enclosing SELECT: a superset of where
        PostgreSQL looks, so a reference it resolves elsewhere is refused rather than let through.
        """
        for column in self.columns:
            qualifier = column.table
            if not qualifier:
                continue
            candidates = [
                source
                for select in _enclosing_selects(column)
                for source in _sources(select)
                if _source_name(source) == qualifier
            ]
            if not candidates:
                _refuse(f"Unknown table {qualifier!r} in {_describe(column)}: name a table of the FROM clause.")
            for source in candidates:
                columns = self.source_columns(source, set())
                if column.name not in columns:
                    listing = ", ".join(sorted(columns)) or "none that can be named"
                    _refuse(f"{qualifier!r} has no column {column.name!r} (its columns: {listing}).")

    def source_columns(self, source: exp.Expression, seen: set[int]) -> set[str]:
        """The column names a FROM item surely has (fewer when unsure, never more)."""
        if id(source) in seen:  # pragma: no cover - a query cannot contain itself
            return set()
        seen = seen | {id(source)}
        names: list[str | None]
        exact = True
        if isinstance(source, exp.Table):
            table = self.usage_event_of.get(id(source))
            cte = self.cte_of.get(id(source))
            if table is not None:
                names = list(_exposed(table))
            elif cte is not None:
                names, exact = self.output_names(cte.this, seen)
                names, exact = _renamed(names, exact, cte.args.get("alias"))
            else:  # pragma: no cover - every table was resolved by the walk
                return set()
        elif isinstance(source, exp.Subquery):
            names, exact = self.output_names(source.this, seen)
        else:  # pragma: no cover - the allow-list lets nothing else into FROM
            return set()
        names, exact = _renamed(names, exact, source.args.get("alias"))
        return {name for name in names if name}

    def output_names(self, query: exp.Expr, seen: set[int]) -> tuple[list[str | None], bool]:
        """The names of a query's result columns by position, and whether the positions are exact."""
        if isinstance(query, exp.Subquery):
            return self.output_names(query.this, seen)
        if isinstance(query, exp.SetOperation):  # named by its first SELECT, as in PostgreSQL
            return self.output_names(query.left, seen)
        if not isinstance(query, exp.Select):  # pragma: no cover - the allow-list lets nothing else in
            return [], False
        names: list[str | None] = []
        exact = True
        for projection in query.selects:
            if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and projection.is_star):
                qualifier = projection.table if isinstance(projection, exp.Column) else ""
                starred: set[str] = set()
                for source in _sources(query):
                    if not qualifier or _source_name(source) == qualifier:
                        starred |= self.source_columns(source, seen)
                names.extend(sorted(starred))
                exact = False
            elif isinstance(projection, exp.Alias):
                names.append(projection.alias)
            elif isinstance(projection, exp.Column):
                names.append(projection.name)
            else:  # PostgreSQL makes up a name ("count", "?column?"): not one to rely on
                names.append(None)
        return names, exact


def _exposed(table: SandboxTable) -> tuple[str, ...]:
    return ("id", "customer_id", "timestamp", *table.fields)


def _renamed(names: list[str | None], exact: bool, alias: Any) -> tuple[list[str | None], bool]:
    """A column list `AS t(a, b)` renames the first columns; after a `*` their positions are unknown."""
    if not isinstance(alias, exp.TableAlias) or not alias.columns:
        return names, exact
    listed: list[str | None] = [column.name for column in alias.columns]
    if not exact:
        return listed, False
    return listed + names[len(listed) :], True


def _enclosing_selects(node: exp.Expression) -> Iterator[exp.Select]:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Select):
            yield parent
        parent = parent.parent


def _sources(select: exp.Select) -> list[exp.Expression]:
    from_ = select.args.get("from_")
    found = [from_.this] if isinstance(from_, exp.From) else []
    found += [join.this for join in select.args.get("joins") or []]
    return [source for source in found if isinstance(source, (exp.Table, exp.Subquery))]


def _source_name(source: exp.Expression) -> str:
    # PostgreSQL hides a table's own name behind its alias; a subquery is known by its alias only.
    alias = source.args.get("alias")
    if isinstance(alias, exp.TableAlias) and alias.name:
        return alias.name
    return source.name if isinstance(source, exp.Table) else ""


# Letter runs PostgreSQL's date/time input reads as a moment that depends on the clock (or as an
# unbounded one): a text that meets a date or time type anywhere, explicitly or not, would be read
# so. SQLite's date functions read 'now' the same way.
_MOMENT_WORDS = {
    "now": "the current moment",
    "today": "the current date",
    "tomorrow": "tomorrow's date",
    "yesterday": "yesterday's date",
    "infinity": "an unbounded moment",
    "epoch": "1970-01-01",
}


def _check_moment_words(text: str) -> None:
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _MOMENT_WORDS:
            _refuse(
                f"The text '{text[:40]}' is not allowed: compared with or cast to a date or time, '{word}' reads as "
                f"{_MOMENT_WORDS[word]}, and a metric's values must be recomputable from its records. "
                f"Use {PLACEHOLDERS_TEXT} or a fixed date such as '2026-01-01'."
            )


def _describe(node: exp.Expression | None) -> str:
    # Called on whatever was refused: it must describe any node, or none, and never fail.
    if not isinstance(node, exp.Expression):
        return "This part of the query"
    if isinstance(node, exp.Anonymous):
        return f"The function {node.name}()"
    if isinstance(node, exp.Lock):
        return "A locking clause (FOR UPDATE / FOR SHARE)"
    if isinstance(node, exp.Into):
        return "SELECT ... INTO"
    if isinstance(node, exp.Parameter):
        return f"The parameter {_sql_text(node)}"
    call = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", _sql_text(node))
    if isinstance(node, exp.Func) and call:
        return f"The function {call.group(1)}()"
    return _snippet(node)


def _sql_text(node: exp.Expr) -> str:
    try:
        text = node.sql(dialect="postgres")
    except Exception:  # sqlglot cannot print every tree it parses
        text = ""
    return text or type(node).__name__


def _snippet(node: exp.Expr) -> str:
    text = _sql_text(node)
    return f"`{text[:60]}{'...' if len(text) > 60 else ''}`"


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


# --- kinds of values: what text may become a date, and what SQLite can answer as PostgreSQL does ---

# "literal" is a string literal (PostgreSQL reads it as whatever type it meets), "unknown" anything not
# worked out: every rule below refuses it where a kind matters.
_FIELD_KINDS = {
    "Int64": "int",
    "Float64": "float",
    "Decimal": "decimal",
    "Bool": "bool",
    "Date32": "date",
    "DateTime64": "timestamp",
    "String": "text",
    "UUID": "text",
}
_CAST_KINDS = {
    **dict.fromkeys((exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT), "int"),
    exp.DataType.Type.DECIMAL: "decimal",
    **dict.fromkeys((exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT), "float"),
    **dict.fromkeys((exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR), "text"),
    exp.DataType.Type.BOOLEAN: "bool",
    exp.DataType.Type.DATE: "date",
    **dict.fromkeys((exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ), "timestamp"),
}
_MOMENT_TYPES = frozenset({exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ})
_TEXT_TYPES = frozenset({exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR})
_MOMENT_KINDS = frozenset({"date", "timestamp"})
_MOMENT_INPUTS = frozenset({"date", "timestamp", "literal", "null"})
# What SQLite turns into the same text as PostgreSQL: not timestamps ('+00' and trimmed fractions
# there), floats (2 vs 2.0), decimals (1.50 vs 1.5), booleans (true vs 1) nor intervals.
_SAME_TEXT_ON_SQLITE = frozenset({"text", "literal", "int", "date", "null"})
_KIND_LABELS = {
    "timestamp": "a timestamp",
    "date": "a date",
    "interval": "an interval",
    "float": "a floating-point number",
    "decimal": "a decimal number",
    "bool": "a boolean",
    "int": "an integer",
    "text": "text",
    "unknown": "a value whose type cannot be told",
}
_BOOLEAN_NODES = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.And, exp.Or, exp.Not,
    exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Exists, exp.Boolean,
)  # fmt: skip
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_ISO_MOMENT_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]00(?::?00)?)?")


def _merge(kinds: Iterable[str]) -> str:
    found = set(kinds) - {"null"}
    if len(found) > 1:
        found.discard("literal")  # a literal takes the type of what it meets
    if not found:
        return "null"
    return found.pop() if len(found) == 1 else "unknown"


def _numeric(*kinds: str) -> str:
    found = set(kinds) - {"null"}
    if found <= {"int"}:
        return "int"
    if found <= {"int", "float"}:
        return "float"
    return "decimal" if found <= {"int", "float", "decimal"} else "unknown"


class _Kinds:
    """The kind of every value of a checked query, by the definitions of the names it uses.

    A column's kind is that of every definition of its name in the query (the usage events' columns,
    AS aliases): when they disagree it is unknown. That is coarser than PostgreSQL's own resolution,
    and only ever refuses more.
    """

    def __init__(self, walker: _Walker) -> None:
        self.memo: dict[int, str] = {}
        self.names: dict[str, str] = {}
        self.pending: set[str] = set()
        self.definitions: dict[str, list[exp.Expression | str]] = {}
        for table in {table.slug: table for _, table in walker.references}.values():
            kinds = {"id": "int", "customer_id": "text", "timestamp": "timestamp"}
            kinds.update({field: _FIELD_KINDS[type_parse(text).base] for field, text in table.fields.items()})
            for name, kind in kinds.items():
                self.definitions.setdefault(name, []).append(kind)
        for alias in walker.aliases:
            self.definitions.setdefault(alias.alias, []).append(alias.this)
        for name in walker.listed:
            self.definitions.setdefault(name, []).append("unknown")

    def of_name(self, name: str) -> str:
        if name not in self.names:
            if name in self.pending:  # a name defined through itself: nothing to rely on
                return "unknown"
            self.pending.add(name)
            definitions = self.definitions.get(name, ["unknown"])
            self.names[name] = _merge(d if isinstance(d, str) else self.of(d) for d in definitions)
            self.pending.discard(name)
        return self.names[name]

    def of(self, node: exp.Expr) -> str:
        if id(node) not in self.memo:
            self.memo[id(node)] = self._of(node)
        return self.memo[id(node)]

    def _of(self, node: exp.Expr) -> str:
        if isinstance(node, exp.Column):
            return "unknown" if node.is_star else self.of_name(node.name)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return "literal"
            return "int" if str(node.this).isdigit() else "decimal"
        if isinstance(node, exp.Null):
            return "null"
        if isinstance(node, exp.Placeholder):
            return "timestamp"
        if isinstance(node, _BOOLEAN_NODES):
            return "bool"
        if isinstance(node, (exp.Paren, exp.Alias, exp.Window, exp.Filter, exp.Neg, exp.Abs, exp.Sum, exp.Nullif)):
            return self.of(node.this)
        if isinstance(node, (exp.Min, exp.Max, exp.FirstValue, exp.LastValue)):
            return self.of(node.this)
        if isinstance(node, exp.Cast):
            return _CAST_KINDS.get(node.to.this, "unknown")
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
            return "timestamp"
        if isinstance(node, exp.Extract):
            return "decimal" if node.name.lower() in ("second", "epoch") else "int"
        if isinstance(node, (exp.Count, exp.RowNumber, exp.Rank, exp.DenseRank, exp.Length)):
            return "int"
        if isinstance(node, (exp.Lower, exp.Upper, exp.Trim, exp.Substring, exp.Concat, exp.DPipe)):
            return "text"
        if isinstance(node, (exp.Avg, exp.Round, exp.Floor, exp.Ceil)):
            return "decimal"
        if isinstance(node, exp.Interval):
            return "interval"
        if isinstance(node, (exp.Lag, exp.Lead)):
            return _merge(self.of(part) for part in (node.this, node.args.get("default")) if part is not None)
        if isinstance(node, (exp.Coalesce, exp.Greatest, exp.Least)):
            return _merge(self.of(part) for part in (node.this, *node.expressions))
        if isinstance(node, exp.Case):
            parts = [branch.args.get("true") for branch in node.args.get("ifs") or []] + [node.args.get("default")]
            return _merge(self.of(part) for part in parts if part is not None)
        if isinstance(node, exp.If):
            branches = (node.args.get("true"), node.args.get("false"))
            return _merge(self.of(part) for part in branches if part is not None)
        if isinstance(node, (exp.Add, exp.Sub)) and _interval_side(node) is not None:
            other = self.of(_moment_side(node))
            return "timestamp" if other in _MOMENT_INPUTS else "unknown"
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            left, right = self.of(node.this), self.of(node.expression)
            if isinstance(node, exp.Sub) and {left, right} <= _MOMENT_INPUTS and {left, right} & _MOMENT_KINDS:
                return "int" if {left, right} <= {"date", "literal", "null"} else "interval"  # PostgreSQL's types
            return _numeric(left, right)
        if isinstance(node, exp.Subquery):
            return self.of(node.this)
        if isinstance(node, exp.SetOperation):
            return _merge((self.of(node.left), self.of(node.right)))
        if isinstance(node, exp.Select):
            return self.of(node.selects[0]) if node.selects else "unknown"
        return "unknown"

    def check(self, root: exp.Expression, vendor: str) -> None:
        """Refuses text that could become a moment at run time, and on SQLite what it answers otherwise."""
        for node in list(root.walk()):
            moment = _moment_input(node)
            if moment is not None:
                value, what = moment
                kind = self.of(value)
                if kind not in _MOMENT_INPUTS and not (isinstance(node, exp.Extract) and kind == "interval"):
                    _refuse(
                        f"{what} takes a date or a timestamp (a column of that type, {PLACEHOLDERS_TEXT}, a literal "
                        f"such as '2026-01-01', or date_trunc, CAST or ± INTERVAL of those), not "
                        f"{_KIND_LABELS.get(kind, kind)}: text computed while the query runs could read as 'now', "
                        "and a metric's values must be recomputable."
                    )
            if vendor == "sqlite":
                self.check_sqlite(node)

    def check_sqlite(self, node: exp.Expr) -> None:
        texts: list[exp.Expression] = []
        if isinstance(node, exp.Cast) and node.to.this in _TEXT_TYPES:
            texts = [node.this]
        elif isinstance(node, exp.Concat):
            texts = list(node.expressions)
        elif isinstance(node, exp.DPipe):
            texts = [node.this, node.expression]
        for value in texts:
            kind = self.of(value)
            if kind not in _SAME_TEXT_ON_SQLITE:
                _refuse(
                    f"On SQLite, turning {_KIND_LABELS.get(kind, kind)} into text ({_snippet(node)}) is "
                    "PostgreSQL-only: SQLite writes it differently, so the answers would differ."
                )
        arithmetic = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg)
        if isinstance(node, arithmetic) and not (isinstance(node, (exp.Add, exp.Sub)) and _interval_side(node)):
            operands = [node.this] if isinstance(node, exp.Neg) else [node.this, node.expression]
            if any(self.of(operand) in ("date", "timestamp", "interval") for operand in operands):
                _refuse(
                    f"On SQLite, date arithmetic other than timestamp ± INTERVAL ({_snippet(node)}) is "
                    "PostgreSQL-only: SQLite stores dates as text."
                )

    def prepare_sqlite(self, root: exp.Expression) -> None:
        """Writes literal moments in SQLite's stored form and notes the kind each translation reads.

        Timestamps are text on SQLite ('YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC, as Django stores them) and
        compare as text: a literal they meet is rewritten in that form, and a date meeting a timestamp
        becomes one, as PostgreSQL would convert them.
        """
        rewrites: dict[int, tuple[exp.Expression, exp.Expression]] = {}

        def rewrite(value: exp.Expression, kind: str) -> None:
            if isinstance(value, exp.Literal) and value.is_string:
                rewrites[id(value)] = (value, exp.Literal.string(_sqlite_moment_text(value.this, kind)))
            elif kind == "timestamp" and self.of(value) == "date":
                rewrites[id(value)] = (value, _fn("datetime", value.copy()))

        for node in list(root.walk()):
            moment = _moment_input(node)
            if moment is not None:
                value = moment[0]
                is_date = isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DATE
                if isinstance(value, exp.Literal) and value.is_string:
                    rewrite(value, "date" if is_date else "timestamp")
                node.meta["zs_kind"] = "timestamp" if self.of(value) == "literal" else self.of(value)
            for group in _compared(node):
                kinds = {self.of(value) for value in group}
                context = "timestamp" if "timestamp" in kinds else "date" if "date" in kinds else None
                if context is not None:
                    for value in group:
                        rewrite(value, context)
        for old, new in rewrites.values():
            old.replace(new)


def _interval_side(node: exp.Add | exp.Sub) -> exp.Interval | None:
    if isinstance(node.expression, exp.Interval):
        return node.expression
    if isinstance(node, exp.Add) and isinstance(node.this, exp.Interval):
        return node.this
    return None


def _moment_side(node: exp.Add | exp.Sub) -> exp.Expression:
    return node.this if _interval_side(node) is node.expression else node.expression


def _moment_input(node: exp.Expr) -> tuple[exp.Expression, str] | None:
    """The value a node reads as a date or time, and how to name the node in a message."""
    if isinstance(node, exp.Cast) and node.to.this in _MOMENT_TYPES:
        return node.this, f"CAST(... AS {node.to.sql(dialect='postgres')})"
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
        return node.this, "date_trunc"
    if isinstance(node, exp.Extract):
        return node.expression, "extract"
    if isinstance(node, (exp.Add, exp.Sub)) and _interval_side(node) is not None:
        return _moment_side(node), "± INTERVAL"
    return None


def _compared(node: exp.Expr) -> list[list[exp.Expression]]:
    """The groups of values a node compares or picks among, which PostgreSQL reads as one type."""
    if isinstance(node, _COMPARISONS):
        return [[node.this, node.expression]]
    if isinstance(node, exp.Between):
        return [[node.this, node.args["low"], node.args["high"]]]
    if isinstance(node, exp.In) and node.expressions:
        return [[node.this, *node.expressions]]
    if isinstance(node, (exp.Coalesce, exp.Greatest, exp.Least)):
        return [[node.this, *node.expressions]]
    if isinstance(node, exp.Nullif):
        return [[node.this, node.expression]]
    if isinstance(node, exp.Case):
        parts = [branch.args.get("true") for branch in node.args.get("ifs") or []] + [node.args.get("default")]
        return [[part for part in parts if part is not None]]
    return []


def _sqlite_moment_text(text: str, kind: str) -> str:
    """A literal date or timestamp in SQLite's stored form; only ISO 8601 in UTC is read the same way."""
    stripped = text.strip()
    try:
        if not _ISO_MOMENT_RE.fullmatch(stripped):
            raise ValueError(stripped)
        moment = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        _refuse(
            f"On SQLite, write the date '{text[:40]}' as ISO 8601 in UTC, such as '2026-01-01' or "
            "'2026-01-01 10:00:00' (other forms are PostgreSQL-only)."
        )
    if kind == "date":
        return moment.date().isoformat()
    return moment.replace(tzinfo=None).isoformat(sep=" ")


# --- SQLite: PostgreSQL's date functions in SQLite's terms ---
#
# Each translation answers exactly as PostgreSQL does on the values SQLite holds: timestamps as
# 'YYYY-MM-DD HH:MM:SS[.ffffff]' text in UTC (Django's form, also of the placeholders' parameters and
# of every literal moment once `_Kinds.prepare_sqlite` has rewritten it), dates as 'YYYY-MM-DD'.
# tests/metrics/test_sandbox_corpus.py runs each of them on both databases against the same values.


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


def _number(value: int) -> exp.Expression:
    return exp.Literal.number(value)


def _int_div(left: exp.Expression, right: int) -> exp.Expression:
    # typed: integer division, as PostgreSQL's and SQLite's own `/` on integers (sqlglot would cast to REAL).
    return exp.Div(this=left, expression=_number(right), typed=True)


def _fraction(value: exp.Expression) -> exp.Expression:
    """'.ffffff' of a stored timestamp, or '' (SQLite's date functions drop it)."""
    has_fraction = exp.EQ(this=_fn("substr", value.copy(), _number(20), _number(1)), expression=exp.Literal.string("."))
    return exp.Case(
        ifs=[exp.If(this=has_fraction, true=_fn("substr", value.copy(), _number(20)))],
        default=exp.Literal.string(""),
    )


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
}
_SQLITE_MOMENT_CASTS = (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ)


def _sqlite_translate(node: exp.Expression) -> exp.Expression:
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
        zone = node.args.get("zone")
        if zone is not None and zone.name.upper() != "UTC":
            _refuse("On SQLite, date_trunc works in UTC only (other time zones are PostgreSQL-only).")
        return _sqlite_trunc(node.text("unit").lower(), node.this)
    if isinstance(node, exp.Extract):
        return _sqlite_extract(node.name.lower(), node.expression)
    if isinstance(node, exp.Cast) and node.to.this in _SQLITE_MOMENT_CASTS:
        # A stored timestamp (or a placeholder's parameter, or a rewritten literal) is already one.
        if node.meta.get("zs_kind") == "date":
            return _fn("datetime", node.this)
        return exp.Paren(this=node.this)
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
        interval = _interval_side(node)
        if interval is not None:
            value = _moment_side(node)
            if node.meta.get("zs_kind") == "date":
                value = _fn("datetime", value)
            return _sqlite_shift(value, interval, negate=isinstance(node, exp.Sub))
    return node


def _sqlite_trunc(unit: str, value: exp.Expression) -> exp.Expression:
    if unit == "week":  # to Monday, as PostgreSQL: the next Sunday (or today), then six days back
        return _fn("strftime", "%Y-%m-%d 00:00:00", value, "weekday 0", "-6 days")
    if unit == "quarter":
        month = _as_integer(_fn("strftime", "%m", value.copy()))
        first_month = exp.Add(
            this=exp.Mul(
                this=exp.Paren(this=_int_div(exp.Paren(this=exp.Sub(this=month, expression=_number(1))), 3)),
                expression=_number(3),
            ),
            expression=_number(1),
        )
        return _fn("printf", "%s-%02d-01 00:00:00", _fn("strftime", "%Y", value), first_month)
    return _fn("strftime", _SQLITE_TRUNC[unit], value)


def _sqlite_extract(unit: str, value: exp.Expression) -> exp.Expression:
    if unit == "second":  # with the microseconds, as PostgreSQL (strftime's %f keeps milliseconds)
        return exp.Cast(this=_fn("substr", value, _number(18)), to=exp.DataType.build("REAL"))
    if unit == "epoch":  # whole seconds, plus the microseconds when there are some
        seconds = _as_integer(_fn("strftime", "%s", value.copy()))
        fraction = exp.Case(
            ifs=[
                exp.If(
                    this=exp.EQ(
                        this=_fn("substr", value.copy(), _number(20), _number(1)), expression=exp.Literal.string(".")
                    ),
                    true=exp.Cast(
                        this=exp.DPipe(this=exp.Literal.string("0"), expression=_fn("substr", value, _number(20))),
                        to=exp.DataType.build("REAL"),
                    ),
                )
            ],
            default=_number(0),
        )
        return exp.Paren(this=exp.Add(this=seconds, expression=fraction))
    if unit == "isodow":  # Monday 1 .. Sunday 7
        weekday = _as_integer(_fn("strftime", "%w", value))
        return exp.Paren(
            this=exp.Add(
                this=exp.Mod(this=exp.Paren(this=exp.Add(this=weekday, expression=_number(6))), expression=_number(7)),
                expression=_number(1),
            )
        )
    if unit == "quarter":
        month = _as_integer(_fn("strftime", "%m", value))
        return exp.Paren(this=_int_div(exp.Paren(this=exp.Add(this=month, expression=_number(2))), 3))
    return _as_integer(_fn("strftime", _SQLITE_EXTRACT[unit], value))


def _sqlite_shift(value: exp.Expression, interval: exp.Interval, *, negate: bool) -> exp.Expression:
    amount, unit = _sqlite_interval(interval)
    if negate:
        amount = -amount
    if unit in ("month", "year"):
        return _sqlite_add_months(value, amount * 12 if unit == "year" else amount)
    shifted = _fn("strftime", "%Y-%m-%d %H:%M:%S", value.copy(), f"{amount:+d} {unit}s")
    return exp.Paren(this=exp.DPipe(this=shifted, expression=_fraction(value)))


def _sqlite_add_months(value: exp.Expression, months: int) -> exp.Expression:
    """PostgreSQL keeps the day of the month but not past the month's last day (Jan 31 + 1 month is
    Feb 28); SQLite's '+1 months' would run on into March, so the day is clamped here."""
    first = _fn("date", value.copy(), "start of month", f"{months:+d} months")
    last_day = _as_integer(_fn("strftime", "%d", first.copy(), "+1 months", "-1 days"))
    day = _fn("min", _as_integer(_fn("strftime", "%d", value.copy())), last_day)
    date_part = exp.DPipe(this=_fn("strftime", "%Y-%m-", first), expression=_fn("printf", "%02d", day))
    return exp.Paren(this=exp.DPipe(this=date_part, expression=_fn("substr", value, _number(11))))


def _sqlite_interval(interval: exp.Interval) -> tuple[int, str]:
    """A whole number of one unit (weeks as days); other intervals are PostgreSQL-only."""
    unit = interval.text("unit").lower().removesuffix("s")
    amount_node = interval.this
    if not unit or unit not in INTERVAL_UNITS or not isinstance(amount_node, exp.Literal):
        _refuse(
            "On SQLite, write intervals as INTERVAL 'N unit' with one unit (second ... year); "
            "others are PostgreSQL-only."
        )
    try:
        amount = Decimal(amount_node.this)
    except InvalidOperation:
        _refuse(f"The interval {interval.sql(dialect='postgres')} is not a number of {unit}s.")
    if not amount.is_finite():
        _refuse(f"The interval {interval.sql(dialect='postgres')} is not a number of {unit}s.")
    if amount != amount.to_integral_value():
        _refuse(
            f"On SQLite, the interval {interval.sql(dialect='postgres')} must be a whole number of {unit}s "
            "(fractions are PostgreSQL-only)."
        )
    if unit == "week":
        return int(amount) * 7, "day"
    return int(amount), unit


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
    return [_row(row, has_dimension=compiled.has_dimension, boolean=compiled.boolean_dimension) for row in rows]


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


def _row(row: Sequence[Any], *, has_dimension: bool, boolean: bool) -> tuple[str, str | None, str | None]:
    customer_id = row[0]
    if customer_id is None:
        _refuse("The query returned a row whose customer_id is NULL.")
    dimension = _dimension_text(row[2], boolean=boolean) if has_dimension else None
    return str(customer_id), _quantity_text(row[1]), dimension


def _dimension_text(value: Any, *, boolean: bool) -> str | None:
    """The same text from either database: PostgreSQL answers datetimes, dates and exact decimals where
    SQLite answers the text it stores (timestamps in UTC, no offset) and floats."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal) and value.is_finite():
        return _decimal_text(value)
    return dimension_text(value, boolean=boolean)


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
    return _decimal_text(number)


def _decimal_text(number: Decimal) -> str:
    # normalize() rounds to the context's precision: give it every digit so the text stays exact.
    text = format(number.normalize(Context(prec=max(28, len(number.as_tuple().digits)))), "f")
    return "0" if text == "-0" else text
