"""Dashboard pages for Usage > Usage data: upload a usage file (map, validate, preview, confirm, progress)
and download records and metric values as CSV."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from metrics.selectors import metric_get, metrics_list
from usage.csv_io import (
    CSV_MAX_BYTES,
    csv_import_confirm,
    csv_import_create,
    csv_import_get,
    csv_import_validate,
    csv_imports_recent,
    mapping_targets,
    metric_values_csv_rows,
    records_csv_rows,
)
from usage.models import CsvImport, CsvImportStatus
from usage.schema import datetime_format
from usage.selectors import usage_event_get, usage_events_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import member_view
from zenskar_site.lib.errors import Conflict, DomainError, NotFound, ValidationFailed
from zenskar_site.lib.forms import UtcDateTimeField

RECENT_IMPORTS = 20
STREAM_CHUNK_CHARS = 64 * 1024


def _admin_only(actor: Actor) -> None:
    # member_view(write=True) guards POSTs; the import pages are refused to viewers outright.
    if not actor.can_write:
        raise PermissionDenied("Only admins of the organisation can import usage.")


def _not_found(request: HttpRequest, exc: NotFound) -> HttpResponse:
    return render(request, "404.html", {"detail": exc.detail}, status=404)


class UploadForm(forms.Form):
    usage_event = forms.ChoiceField(label="Usage event")
    file = forms.FileField(label="CSV file", help_text="UTF-8, the first row naming the columns; up to 50 MiB.")

    def __init__(self, *args: Any, usage_events: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["usage_event"].choices = usage_events  # type: ignore[attr-defined]
        self.fields["file"].widget.attrs["accept"] = ".csv,text/csv"

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > CSV_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {CSV_MAX_BYTES // (1024 * 1024)} MiB."
            )
        return upload


class ExportForm(forms.Form):
    source = forms.ChoiceField(label="Data")
    customer = forms.CharField(label="Customer ID", max_length=255, required=False)
    start = UtcDateTimeField(label="From (UTC)", required=False)
    end = UtcDateTimeField(label="To (UTC)", required=False)
    include_voided = forms.BooleanField(label="Include voided records", required=False)

    def __init__(self, *args: Any, sources: list[tuple[str, list[tuple[str, str]]]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = sources  # type: ignore[attr-defined]


class MappingForm(forms.Form):
    """One select per CSV column: the field it fills, or nothing."""

    def __init__(
        self,
        *args: Any,
        columns: list[str],
        targets: list[tuple[str, str]],
        mapping: dict[str, str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.columns = columns
        for index, column in enumerate(columns):
            self.fields[f"column_{index}"] = forms.ChoiceField(
                label=column,
                choices=[("", "— ignore this column —"), *targets],
                required=False,
                initial=mapping.get(column, ""),
            )

    def mapping(self) -> dict[str, str]:
        return {column: self.cleaned_data[f"column_{index}"] for index, column in enumerate(self.columns)}


def _export_sources(actor: Actor) -> list[tuple[str, list[tuple[str, str]]]]:
    events = [
        (f"records:{e.api_slug}", f"{e.name} ({e.api_slug})")
        for e in usage_events_list(organisation=actor.organisation)
    ]
    metrics = [(f"values:{m.slug}", f"{m.name} ({m.slug})") for m in metrics_list(organisation=actor.organisation)]
    return [("Records of a usage event", events), ("Values of a billable metric", metrics)]


@member_view(write=True)
def usage_data(request: HttpRequest, actor: Actor) -> HttpResponse:
    """Usage > Usage data: upload a usage file (step 1), the latest imports, and the exports."""
    _admin_only(actor)
    events = list(usage_events_list(organisation=actor.organisation))
    form = UploadForm(
        request.POST or None,
        request.FILES or None,
        usage_events=[(e.api_slug, f"{e.name} ({e.api_slug})") for e in events],
        initial={"usage_event": request.GET.get("usage_event", "")},
    )
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            csv_import = csv_import_create(
                actor=actor,
                usage_event_slug=form.cleaned_data["usage_event"],
                filename=upload.name,
                content=b"".join(upload.chunks()),
            )
        except ValidationFailed as exc:
            for path, problems in exc.errors.items():
                for problem in problems:
                    form.add_error("usage_event" if path == "usage_event" else "file", problem)
        else:
            return redirect("usage:csv:mapping", import_id=csv_import.id)
    return render(
        request,
        "usage/csv_data.html",
        {
            "form": form,
            "has_events": bool(events),
            "imports": csv_imports_recent(organisation=actor.organisation, limit=RECENT_IMPORTS),
            "export_form": ExportForm(sources=_export_sources(actor)),
            "step": 1,
        },
    )


def _import_or_404(request: HttpRequest, actor: Actor, import_id: int) -> CsvImport | HttpResponse:
    try:
        return csv_import_get(organisation=actor.organisation, import_id=import_id)
    except NotFound as exc:
        return _not_found(request, exc)


def _page_for(csv_import: CsvImport) -> str:
    if csv_import.status == CsvImportStatus.UPLOADED:
        return "usage:csv:mapping"
    if csv_import.status == CsvImportStatus.VALIDATED:
        return "usage:csv:preview"
    return "usage:csv:progress"


@member_view(write=True)
def csv_import_mapping(request: HttpRequest, actor: Actor, import_id: int) -> HttpResponse:
    """Step 2: map each CSV column to a field, then validate every row."""
    _admin_only(actor)
    found = _import_or_404(request, actor, import_id)
    if isinstance(found, HttpResponse):
        return found
    csv_import = found
    if csv_import.status not in (CsvImportStatus.UPLOADED, CsvImportStatus.VALIDATED):
        return redirect(_page_for(csv_import), import_id=csv_import.id)
    form = MappingForm(
        request.POST or None,
        columns=csv_import.columns,
        targets=mapping_targets(csv_import.usage_event),
        mapping=csv_import.mapping,
    )
    if request.method == "POST" and form.is_valid():
        try:
            csv_import_validate(actor=actor, import_id=csv_import.id, mapping=form.mapping())
        except ValidationFailed as exc:
            for path, problems in exc.errors.items():
                column = path.removeprefix("mapping.")
                name = f"column_{csv_import.columns.index(column)}" if column in csv_import.columns else None
                for problem in problems:
                    form.add_error(name, problem)
        except Conflict as exc:
            messages.error(request, exc.detail)
            return redirect("usage:csv:progress", import_id=csv_import.id)
        else:
            return redirect("usage:csv:preview", import_id=csv_import.id)
    rows = [
        {
            "field": form[f"column_{index}"],
            "samples": [row[index] for row in csv_import.sample if index < len(row)],
        }
        for index in range(len(csv_import.columns))
    ]
    return render(request, "usage/csv_mapping.html", {"csv_import": csv_import, "form": form, "rows": rows, "step": 2})


@member_view(write=True)
def csv_import_preview(request: HttpRequest, actor: Actor, import_id: int) -> HttpResponse:
    """Step 3: the validation's counts and first row-numbered errors; confirm when every row is valid."""
    _admin_only(actor)
    found = _import_or_404(request, actor, import_id)
    if isinstance(found, HttpResponse):
        return found
    csv_import = found
    if csv_import.status != CsvImportStatus.VALIDATED:
        return redirect(_page_for(csv_import), import_id=csv_import.id)
    valid = csv_import.rows_total - csv_import.rows_invalid
    mapped = [(column, target) for column, target in csv_import.mapping.items() if target]
    ignored = [column for column, target in csv_import.mapping.items() if not target]
    return render(
        request,
        "usage/csv_preview.html",
        {
            "csv_import": csv_import,
            "valid": valid,
            "new_rows": valid - csv_import.rows_duplicate,
            "can_confirm": csv_import.rows_invalid == 0 and csv_import.rows_total > 0,
            "mapped": mapped,
            "ignored": ignored,
            "step": 3,
        },
    )


@require_POST
@member_view(write=True)
def csv_import_confirm_view(request: HttpRequest, actor: Actor, import_id: int) -> HttpResponse:
    _admin_only(actor)
    try:
        csv_import_confirm(actor=actor, import_id=import_id)
    except NotFound as exc:
        return _not_found(request, exc)
    except DomainError as exc:
        messages.error(request, f"Not imported: {exc.detail}")
        return redirect("usage:csv:preview", import_id=import_id)
    return redirect("usage:csv:progress", import_id=import_id)


@member_view(write=True)
def csv_import_progress(request: HttpRequest, actor: Actor, import_id: int) -> HttpResponse:
    """Step 4: the import's progress (the page refreshes itself while it runs), then its result."""
    _admin_only(actor)
    found = _import_or_404(request, actor, import_id)
    if isinstance(found, HttpResponse):
        return found
    csv_import = found
    if csv_import.status in (CsvImportStatus.UPLOADED, CsvImportStatus.VALIDATED):
        return redirect(_page_for(csv_import), import_id=csv_import.id)
    total = csv_import.rows_total
    return render(
        request,
        "usage/csv_progress.html",
        {
            "csv_import": csv_import,
            "running": csv_import.status == CsvImportStatus.IMPORTING,
            "percent": 100 * csv_import.rows_done // total if total else 100,
            "row_errors": [e for e in csv_import.errors if e.get("row") is not None],
            "run_errors": [e for e in csv_import.errors if e.get("row") is None],
            "step": 4,
        },
    )


@require_GET
@member_view()
def csv_export(request: HttpRequest, actor: Actor) -> HttpResponse:
    """The export form's target: sends the browser to the chosen download with its filters."""
    form = ExportForm(request.GET, sources=_export_sources(actor))
    if not form.is_valid():
        messages.error(request, "Export: " + " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("usage:csv:data")
    kind, _, slug = form.cleaned_data["source"].partition(":")
    query: dict[str, str] = {}
    if form.cleaned_data["customer"]:
        query["customer"] = form.cleaned_data["customer"]
    if form.cleaned_data["start"]:
        query["from"] = datetime_format(form.cleaned_data["start"])
    if form.cleaned_data["end"]:
        query["to"] = datetime_format(form.cleaned_data["end"])
    if kind == "records":
        if form.cleaned_data["include_voided"]:
            query["include_voided"] = "true"
        url = reverse("usage:records-export", kwargs={"api_slug": slug})
    else:
        url = reverse("usage:metric-values-export", kwargs={"metric_slug": slug})
    return redirect(f"{url}?{urlencode(query)}" if query else url)


# --- streamed CSV downloads ---


class _Echo:
    """A file-like object for csv.writer that hands each line back instead of buffering it."""

    def write(self, value: str) -> str:
        return value


def _csv_stream(rows: Iterator[list[str]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    chunk: list[str] = []
    size = 0
    for row in rows:
        line = writer.writerow(row)
        chunk.append(line)
        size += len(line)
        if size >= STREAM_CHUNK_CHARS:
            yield "".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "".join(chunk)


def _csv_response(rows: Iterator[list[str]], filename: str) -> HttpResponse:
    response = StreamingHttpResponse(_csv_stream(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    # member_view is typed for HttpResponse; Django serves a streaming response through it unchanged.
    return cast(HttpResponse, response)


def _export_filters(request: HttpRequest) -> tuple[str | None, dt.datetime | None, dt.datetime | None]:
    """`customer`, `from` (inclusive) and `to` (exclusive): ISO 8601 moments or dates, read as UTC."""
    moment = UtcDateTimeField(required=False)
    found: dict[str, dt.datetime | None] = {}
    for name in ("from", "to"):
        try:
            found[name] = moment.clean(request.GET.get(name, "").strip())
        except forms.ValidationError:
            raise ValidationFailed({name: ["Expected a date or an ISO 8601 moment, such as 2026-11-20T14:00:00Z."]})
    start, end = found["from"], found["to"]
    if start is not None and end is not None and start >= end:
        raise ValidationFailed({"to": ["“to” must be later than “from”."]})
    return request.GET.get("customer", "").strip() or None, start, end


@require_GET
@member_view()
def records_export(request: HttpRequest, actor: Actor, api_slug: str) -> HttpResponse:
    """GET /usage-events/<slug>/export.csv?customer=&from=&to=&include_voided=: the records, streamed."""
    try:
        usage_event = usage_event_get(organisation=actor.organisation, api_slug=api_slug)
        customer_id, start, end = _export_filters(request)
    except NotFound as exc:
        return _not_found(request, exc)
    except ValidationFailed as exc:
        return HttpResponseBadRequest(exc.detail, content_type="text/plain; charset=utf-8")
    rows = records_csv_rows(
        usage_event=usage_event,
        customer_id=customer_id,
        start=start,
        end=end,
        include_voided=request.GET.get("include_voided", "").lower() in {"1", "true", "yes", "on"},
    )
    return _csv_response(rows, f"{usage_event.api_slug}-records.csv")


@require_GET
@member_view()
def metric_values_export(request: HttpRequest, actor: Actor, metric_slug: str) -> HttpResponse:
    """GET /usage-events/metrics/<slug>/export.csv?customer=&from=&to=: the metric's values, streamed."""
    try:
        metric = metric_get(organisation=actor.organisation, slug=metric_slug)
        customer_id, start, end = _export_filters(request)
    except NotFound as exc:
        return _not_found(request, exc)
    except ValidationFailed as exc:
        return HttpResponseBadRequest(exc.detail, content_type="text/plain; charset=utf-8")
    rows = metric_values_csv_rows(metric=metric, customer_id=customer_id, start=start, end=end)
    return _csv_response(rows, f"{metric.slug}-values.csv")
