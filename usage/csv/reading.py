"""Reading an uploaded CSV file: decoding, the delimiter, the header, mapping columns to fields, converting
cells, and the row-numbered errors an import keeps.

Rows are numbered as in a spreadsheet: the header is row 1.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from usage.models import CsvImport, UsageEvent
from usage.schema import type_parse
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.text import printable, unstorable_message

ERRORS_KEPT = 50
SAMPLE_ROWS = 3
SAMPLE_CELL_CHARS = 200
VALUE_SHOWN_CHARS = 80
ROOT_TARGETS = ("customer_id", "timestamp", "idempotency_key")
DELIMITERS = (",", ";", "\t")

_INT_RE = re.compile(r"^[+-]?\d{1,25}\Z", re.ASCII)
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?\Z", re.ASCII)
_NUMBER_MAX_CHARS = 64
_ALIASES = {
    "customer": "customer_id",
    "customerid": "customer_id",
    "time": "timestamp",
    "ts": "timestamp",
    "key": "idempotency_key",
    "idempotencykey": "idempotency_key",
}


# --- reading the file ---


def _text_stream(content: bytes) -> io.TextIOWrapper:
    # Decoded as it is read, so a 50 MiB file is never held as one 50-million-character string.
    return io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", newline="")


def _blank(cells: list[str]) -> bool:
    return all(cell == "" for cell in cells)


def data_rows(*, csv_import: CsvImport) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of every data row that is not blank: the header is row 1, as in a spreadsheet."""
    reader = csv.reader(_text_stream(bytes(csv_import.content)), delimiter=csv_import.delimiter)
    next(reader, None)
    for number, cells in enumerate(reader, start=2):
        if not _blank(cells):
            yield number, cells


def _encoding_error(content: bytes) -> ValidationFailed:
    start = len(codecs.BOM_UTF8) if content.startswith(codecs.BOM_UTF8) else 0
    try:
        content[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        before = content[start:offset].decode("utf-8")
        # The row the bad byte is in: complete rows before it, plus the one it starts or continues.
        row = sum(1 for _ in csv.reader(io.StringIO(before, newline="")))
        if not before or before.endswith(("\n", "\r")):
            row += 1
        return ValidationFailed(
            {
                "file": [
                    f"Row {row}: the file is not UTF-8 (byte 0x{content[offset]:02X} at byte offset {offset}). "
                    "Save it as UTF-8 (“CSV UTF-8” in Excel) and upload it again."
                ]
            }
        )
    return ValidationFailed({"file": ["The file is not UTF-8 text."]})


def _delimiter_of(content: bytes) -> str:
    first_line = content[:65536].split(b"\n", 1)[0].decode("utf-8", errors="replace")
    counts = {delimiter: first_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


@dataclass
class Inspection:
    delimiter: str
    columns: list[str]
    rows: int
    sample: list[list[str]]


def content_inspect(*, content: bytes) -> Inspection:
    """Read the whole file once: UTF-8, well-formed CSV, a header of unique names; count the data rows."""
    delimiter = _delimiter_of(content)
    reader = csv.reader(_text_stream(content), delimiter=delimiter)
    header: list[str] | None = None
    number = rows = 0  # the row being read: a csv.Error names it
    sample: list[list[str]] = []
    try:
        for cells in reader:
            number += 1
            if number == 1:
                header = cells
            elif not _blank(cells):
                rows += 1
                if len(sample) < SAMPLE_ROWS:  # shown, not imported: a NUL is shown escaped (jsonb refuses it)
                    sample.append([printable(cell[:SAMPLE_CELL_CHARS]) for cell in cells])
    except UnicodeDecodeError:
        raise _encoding_error(content)
    except csv.Error as exc:
        raise ValidationFailed({"file": [f"Row {number + 1}: not valid CSV ({exc})."]})
    if header is None or _blank(header):
        raise ValidationFailed({"file": ["Row 1 must be a header row naming the columns; it is empty."]})
    columns = [name.strip() for name in header]
    problems = []
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if not name:
            problems.append(f"Row 1: column {position} has no name; name every column in the header row.")
        elif (problem := unstorable_message(name)) is not None:
            problems.append(f"Row 1: the name of column {position}: {problem}")
        elif name in seen:
            problems.append(f"Row 1: the column name {name!r} is used twice (columns {seen[name]} and {position}).")
        else:
            seen[name] = position
    if problems:
        raise ValidationFailed({"file": problems})
    return Inspection(delimiter=delimiter, columns=columns, rows=rows, sample=sample)


# --- mapping columns to fields ---


def mapping_targets(usage_event: UsageEvent) -> list[tuple[str, str]]:
    """What a CSV column can be mapped to: (target, label), the root columns first."""
    targets = [
        ("customer_id", "customer_id (String, required)"),
        ("timestamp", "timestamp (DateTime64, required)"),
        ("idempotency_key", "idempotency_key (String, optional)"),
    ]
    for name, type_text in usage_event.dataschema.get("data", {}).items():
        optional = "optional" if type_parse(type_text).nullable else "required"
        targets.append((f"data.{name}", f"{name} ({type_parse(type_text).base}, {optional})"))
    return targets


def _normalized(name: str) -> str:
    text = re.sub(r"[\s\-.]+", "_", name.strip().lower())
    return text.removeprefix("data_")


def mapping_propose(*, columns: list[str], usage_event: UsageEvent) -> dict[str, str]:
    """Match column names to fields (case, spaces and a `data.` prefix ignored); unmatched columns are ignored."""
    by_name = {target.removeprefix("data."): target for target, _ in mapping_targets(usage_event)}
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for column in columns:
        name = _normalized(column)
        target = by_name.get(name) or by_name.get(_ALIASES.get(name.replace("_", ""), ""), "")
        if target and target not in taken:
            mapping[column] = target
            taken.add(target)
        else:
            mapping[column] = ""
    return mapping


def _cell_int(text: str) -> Any:
    stripped = text.strip()
    if _INT_RE.match(stripped):
        return int(stripped)
    if len(stripped) <= _NUMBER_MAX_CHARS and _NUMBER_RE.match(stripped):
        return Decimal(stripped)  # the validator takes 5.0 as 5 and names a fraction, as for JSON
    return text


def _cell_float(text: str) -> Any:
    stripped = text.strip()
    if len(stripped) <= _NUMBER_MAX_CHARS and _NUMBER_RE.match(stripped):
        return float(stripped)
    return text


def _cell_bool(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return text


CELL_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "Int64": _cell_int,
    "Float64": _cell_float,
    "Decimal": str.strip,  # kept as text: the validator reads it exactly
    "Bool": _cell_bool,
}
_STRIPPED_TYPES = frozenset(CELL_CONVERTERS)


@dataclass
class RowPlan:
    """A mapping compiled against a usage event's schema: which cell goes where, converted how."""

    roots: list[tuple[int, str]]
    data: list[tuple[int, str, Callable[[str], Any] | None, bool]]
    column_of: dict[str, str]  # an error path ("customer_id", "data.x") -> the CSV column mapped to it
    missing: dict[str, str]  # an error path -> the message for the header row

    def item(self, cells: list[str]) -> dict[str, Any]:
        """One row as the JSON-like record the ingestion validator reads; an empty cell is absent."""
        width = len(cells)
        item: dict[str, Any] = {}
        for index, target in self.roots:
            text = cells[index] if index < width else ""
            if text != "":
                item[target] = text
        data: dict[str, Any] = {}
        for index, name, convert, strip in self.data:
            text = cells[index] if index < width else ""
            if (text.strip() if strip else text) == "":
                continue
            data[name] = convert(text) if convert is not None else text
        item["data"] = data
        return item


def row_plan_compile(*, columns: list[str], mapping: dict[str, str], usage_event: UsageEvent) -> RowPlan:
    """Check a mapping (unknown columns or targets, a target used twice are refused) and compile it."""
    schema = usage_event.dataschema.get("data", {})
    known_targets = {target for target, _ in mapping_targets(usage_event)}
    problems: dict[str, list[str]] = {}
    used: dict[str, str] = {}
    for column, target in mapping.items():
        if column not in columns:
            problems.setdefault("mapping", []).append(f"The file has no column named {column!r}.")
        elif target and target not in known_targets:
            problems.setdefault(f"mapping.{column}", []).append(
                f"{target!r} is not a field of {usage_event.api_slug!r}; map it to customer_id, timestamp, "
                "idempotency_key, data.<field>, or nothing."
            )
        elif target and target in used:
            problems.setdefault(f"mapping.{column}", []).append(
                f"{target} is already mapped from the column {used[target]!r}; map each field from one column."
            )
        elif target:
            used[target] = column
    if problems:
        raise ValidationFailed(problems)
    position = {name: index for index, name in enumerate(columns)}
    roots = [(position[used[target]], target) for target in ROOT_TARGETS if target in used]
    data = []
    missing: dict[str, str] = {}
    for root in ("customer_id", "timestamp"):
        if root not in used:
            missing[root] = f"Missing column for {root}: map a CSV column to it."
    for name, type_text in schema.items():
        field_type = type_parse(type_text)
        target = f"data.{name}"
        if target in used:
            data.append(
                (
                    position[used[target]],
                    name,
                    CELL_CONVERTERS.get(field_type.base),
                    field_type.base in _STRIPPED_TYPES,
                )
            )
        elif not field_type.nullable:
            missing[target] = f"Missing column for {name}: the field is required; map a CSV column to it."
    return RowPlan(roots=roots, data=data, column_of=dict(used), missing=missing)


# --- errors ---


def _clip(text: str) -> str:
    return text if len(text) <= VALUE_SHOWN_CHARS else text[: VALUE_SHOWN_CHARS - 1] + "…"


class RowErrors:
    """The first ERRORS_KEPT errors by row number (rows can be found bad out of order)."""

    def __init__(self, initial: list[dict[str, Any]] | None = None) -> None:
        self.kept: list[dict[str, Any]] = list(initial or [])

    def add(self, *, row: int, column: str, field: str, value: str, message: str) -> None:
        # The value is shown as the file has it, a NUL escaped (the errors are kept in jsonb, which refuses it).
        self.kept.append(
            {"row": row, "column": column, "field": field, "value": printable(_clip(value)), "message": message}
        )
        if len(self.kept) > ERRORS_KEPT:
            self.kept.sort(key=_by_row)
            del self.kept[ERRORS_KEPT:]

    def add_record_errors(
        self, *, row: int, cells: list[str], plan: RowPlan, columns: list[str], errors: dict[str, list[str]]
    ) -> None:
        for path, messages in errors.items():
            column = plan.column_of.get(path, "")
            index = columns.index(column) if column else -1
            value = cells[index] if 0 <= index < len(cells) else ""
            for message in messages:
                self.add(row=row, column=column, field=path, value=value, message=message)

    def add_key_conflict(self, *, row: int, plan: RowPlan, value: str, message: str) -> None:
        """The row's idempotency key is taken by other content (on an earlier row, or already stored)."""
        self.add(
            row=row,
            column=plan.column_of.get("idempotency_key", ""),
            field="idempotency_key",
            value=value,
            message=message,
        )

    def sorted(self) -> list[dict[str, Any]]:
        return sorted(self.kept, key=_by_row)


def _by_row(error: dict[str, Any]) -> int:
    return error["row"] if error["row"] is not None else 0  # a whole-import problem comes first
