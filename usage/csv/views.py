"""Dashboard pages for Usage > Usage data: upload a usage file (map, validate, preview, confirm, progress),
and download records as CSV (other apps add their downloads to the export form: `usage.csv.exports`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from usage.csv.exports import export_choices, export_source_get, records_csv_rows
from usage.csv.forms import ExportForm, MappingForm, UploadForm
from usage.csv.imports import csv_import_confirm, csv_import_create, csv_import_validate
from usage.csv.reading import mapping_targets
from usage.models import CsvImport, CsvImportStatus
from usage.schema import datetime_format
from usage.selectors import csv_import_get, csv_imports_recent, usage_event_get, usage_events_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import View, member_view
from zenskar_site.lib.csvstream import csv_download
from zenskar_site.lib.errors import Conflict, DomainError, NotFound, ValidationFailed
from zenskar_site.lib.pages import not_found_page

RECENT_IMPORTS = 20


def _admin_only(actor: Actor) -> None:
    # member_view(write=True) guards POSTs; the import pages are refused to viewers outright.
    if not actor.can_write:
        raise PermissionDenied("Only admins of the organisation can import usage.")


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
            "export_form": ExportForm(sources=export_choices(organisation=actor.organisation)),
            "step": 1,
        },
    )


def _page_for(csv_import: CsvImport) -> str:
    if csv_import.status == CsvImportStatus.UPLOADED:
        return "usage:csv:mapping"
    if csv_import.status == CsvImportStatus.VALIDATED:
        return "usage:csv:preview"
    return "usage:csv:progress"


ImportPage = Callable[[HttpRequest, Actor, CsvImport], HttpResponse]


def _import_page(*statuses: CsvImportStatus) -> Callable[[ImportPage], View]:
    """A step's page of one import (`import_id` in the URL), for admins: a 404 page when the import is not
    the organisation's, a redirect to its step's page when its status is not one of `statuses`."""

    def decorator(page: ImportPage) -> View:
        @member_view(write=True)
        @wraps(page)
        def view(request: HttpRequest, actor: Actor, import_id: int) -> HttpResponse:
            _admin_only(actor)
            try:
                csv_import = csv_import_get(organisation=actor.organisation, import_id=import_id)
            except NotFound as exc:
                return not_found_page(request, exc)
            if csv_import.status not in statuses:
                return redirect(_page_for(csv_import), import_id=csv_import.id)
            return page(request, actor, csv_import)

        return view

    return decorator


@_import_page(CsvImportStatus.UPLOADED, CsvImportStatus.VALIDATED)
def csv_import_mapping(request: HttpRequest, actor: Actor, csv_import: CsvImport) -> HttpResponse:
    """Step 2: map each CSV column to a field, then validate every row."""
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


@_import_page(CsvImportStatus.VALIDATED)
def csv_import_preview(request: HttpRequest, actor: Actor, csv_import: CsvImport) -> HttpResponse:
    """Step 3: the validation's counts and first row-numbered errors; confirm when every row is valid."""
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
        return not_found_page(request, exc)
    except DomainError as exc:
        messages.error(request, f"Not imported: {exc.detail}")
        return redirect("usage:csv:preview", import_id=import_id)
    return redirect("usage:csv:progress", import_id=import_id)


@_import_page(CsvImportStatus.IMPORTING, CsvImportStatus.DONE, CsvImportStatus.FAILED)
def csv_import_progress(request: HttpRequest, actor: Actor, csv_import: CsvImport) -> HttpResponse:
    """Step 4: the import's progress (the page refreshes itself while it runs), then its result."""
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
    form = ExportForm(request.GET, sources=export_choices(organisation=actor.organisation))
    if not form.is_valid():
        messages.error(request, "Export: " + " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("usage:csv:data")
    key_prefix, _, slug = form.cleaned_data["source"].partition(":")
    source = export_source_get(key_prefix)  # the form accepts only the registered sources' choices
    query: dict[str, str] = {}
    if form.cleaned_data["customer"]:
        query["customer"] = form.cleaned_data["customer"]
    if form.cleaned_data["start"]:
        query["from"] = datetime_format(form.cleaned_data["start"])
    if form.cleaned_data["end"]:
        query["to"] = datetime_format(form.cleaned_data["end"])
    if source.include_voided and form.cleaned_data["include_voided"]:
        query["include_voided"] = "true"
    url = source.url(slug)
    return redirect(f"{url}?{urlencode(query)}" if query else url)


@require_GET
@member_view()
def records_export(request: HttpRequest, actor: Actor, api_slug: str) -> HttpResponse:
    """GET /usage-events/<slug>/export.csv?customer=&from=&to=&include_voided=: the records, streamed."""
    include_voided = request.GET.get("include_voided", "").lower() in {"1", "true", "yes", "on"}
    return csv_download(
        request,
        find=lambda: usage_event_get(organisation=actor.organisation, api_slug=api_slug),
        rows=lambda usage_event, filters: records_csv_rows(
            usage_event=usage_event,
            customer_id=filters.customer_id,
            start=filters.start,
            end=filters.end,
            include_voided=include_voided,
        ),
        filename=lambda usage_event: f"{usage_event.api_slug}-records.csv",
    )
