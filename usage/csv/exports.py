"""CSV out of a usage event, and the export sources the Usage data page offers.

A higher app (metrics) adds its own downloads to the page's export form by registering an
`ExportSource` from its `AppConfig.ready`, so usage never imports it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.urls import reverse

from usage.models import UsageEvent
from usage.selectors import records_list, usage_events_list
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.csvstream import ITERATOR_CHUNK_ROWS, csv_cell


def records_csv_rows(
    *,
    usage_event: UsageEvent,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    include_voided: bool = False,
) -> Iterator[list[str]]:
    """A usage event's records as CSV rows, header first, oldest id first; `start` inclusive, `end` exclusive.

    Every cell goes through `csv_cell`: customer ids, data and idempotency keys come from clients.
    """
    fields = list(usage_event.dataschema.get("data", {}))
    yield ["id", "customer_id", "timestamp", *fields, "idempotency_key", "received_at", "voided", "superseded"]
    records = records_list(
        usage_event=usage_event, customer_id=customer_id, start=start, end=end, include_voided=include_voided
    )
    rows = records.order_by("id").values_list(
        "id", "customer_id", "timestamp", "data", "idempotency_key", "received_at", "voided", "superseded"
    )
    for record_id, customer, timestamp, data, key, received_at, voided, superseded in rows.iterator(
        chunk_size=ITERATOR_CHUNK_ROWS
    ):
        yield [
            csv_cell(record_id),
            csv_cell(customer),
            csv_cell(timestamp),
            *(csv_cell(data.get(name)) for name in fields),
            csv_cell(key),
            csv_cell(received_at),
            csv_cell(voided),
            csv_cell(superseded),
        ]


# --- the sources of the Usage data page's export form ---


@dataclass(frozen=True)
class ExportSource:
    """One group of the export form's choices: an object each (`<key_prefix>:<slug>`), downloaded at `url(slug)`."""

    key_prefix: str
    group_label: str
    choices: Callable[[Organisation], Iterable[tuple[str, str]]]  # (slug, name) of each object offered
    url: Callable[[str], str]  # the download's URL; the form adds `customer`, `from` and `to`
    include_voided: bool = False  # the download also reads `include_voided`


RECORDS_SOURCE = ExportSource(
    key_prefix="records",
    group_label="Records of a usage event",
    choices=lambda organisation: usage_events_list(organisation=organisation).values_list("api_slug", "name"),
    url=lambda slug: reverse("usage:records-export", kwargs={"api_slug": slug}),
    include_voided=True,
)

# The records first, then each registered source in the order it was registered.
_sources: dict[str, ExportSource] = {RECORDS_SOURCE.key_prefix: RECORDS_SOURCE}


def export_source_register(source: ExportSource) -> None:
    """Offer a source on the Usage data page; registering a key prefix again replaces its source."""
    _sources[source.key_prefix] = source


def export_source_get(key_prefix: str) -> ExportSource:
    """The source registered under `key_prefix`; KeyError when there is none."""
    return _sources[key_prefix]


def export_choices(*, organisation: Organisation) -> list[tuple[str, list[tuple[str, str]]]]:
    """The export form's grouped choices: (group label, [(`<key_prefix>:<slug>`, label), ...])."""
    return [
        (
            source.group_label,
            [(f"{source.key_prefix}:{slug}", f"{name} ({slug})") for slug, name in source.choices(organisation)],
        )
        for source in _sources.values()
    ]
