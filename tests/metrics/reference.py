"""An independent computation of builder metrics in plain Python, for the engine's tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, localcontext
from typing import Any

from metrics.engine.builder import decimal_text, dimension_key_of

NUMERIC = {"Int64", "Float64", "Decimal"}


def _dec(value: Any) -> Decimal:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def floor(moment: dt.datetime, granularity: str) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _matches(data: dict[str, Any], fields: dict[str, str], condition: dict[str, Any]) -> bool:
    value = data.get(condition["field"])
    base = fields[condition["field"]].removeprefix("Nullable(").removesuffix(")")
    op, target = condition["op"], condition.get("value")
    if op == "is_null":
        return value is None
    if op == "is_not_null":
        return value is not None

    def norm(v: Any) -> Any:
        return _dec(v) if base in NUMERIC else v

    if op == "neq":
        return value is None or norm(value) != norm(target)
    if op == "not_in":
        return value is None or norm(value) not in [norm(t) for t in target]
    if value is None:
        return False
    if op == "in":
        return norm(value) in [norm(t) for t in target]
    left, right = norm(value), norm(target)
    return {"eq": left == right, "gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]


def reference_values(
    *,
    records: list[dict[str, Any]],
    fields: dict[str, str],
    aggregation: str,
    field: str,
    filters: list[dict[str, Any]],
    group_by: list[str],
    granularity: str,
) -> dict[tuple[str, dt.datetime, str], str | None]:
    """records: dicts with id, customer_id, timestamp, data, voided, superseded."""
    groups: dict[tuple[str, dt.datetime, str], list[dict[str, Any]]] = {}
    dims: dict[str, dict[str, Any] | None] = {}
    for record in records:
        if record["voided"] or record["superseded"]:
            continue
        if not all(_matches(record["data"], fields, c) for c in filters):
            continue
        dimension = None
        if group_by:
            dimension = {}
            for name in group_by:
                raw = record["data"].get(name)
                if raw is None:
                    dimension[name] = None
                elif isinstance(raw, bool):
                    dimension[name] = "true" if raw else "false"
                else:
                    dimension[name] = str(raw)
        key = (record["customer_id"], floor(record["timestamp"], granularity), dimension_key_of(dimension))
        dims[key[2]] = dimension
        groups.setdefault(key, []).append(record)
    result: dict[tuple[str, dt.datetime, str], str | None] = {}
    for key, members in groups.items():
        values = [m["data"].get(field) for m in members] if field else []
        present = [_dec(v) for v in values if v is not None] if aggregation not in ("count", "unique_count") else []
        amount: Decimal | None
        if aggregation == "count":
            amount = Decimal(len(members))
        elif aggregation == "unique_count":
            amount = Decimal(len({str(v) for v in values if v is not None}))
        elif aggregation == "sum":
            amount = sum(present, Decimal(0)) if present else None
        elif aggregation == "min":
            amount = min(present) if present else None
        elif aggregation == "max":
            amount = max(present) if present else None
        elif aggregation == "avg":
            with localcontext() as context:
                context.prec = 60
                amount = sum(present, Decimal(0)) / len(present) if present else None
        elif aggregation == "latest":
            newest = max(members, key=lambda m: (m["timestamp"], m["id"]))
            raw = newest["data"].get(field)
            amount = _dec(raw) if raw is not None else None
        else:
            raise AssertionError(aggregation)
        result[key] = decimal_text(amount)
    return result
