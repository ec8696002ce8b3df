"""The forms of Usage > Usage data: the upload, the column mapping and the export."""

from __future__ import annotations

from typing import Any

from django import forms

from usage.csv.imports import CSV_MAX_BYTES
from zenskar_site.lib.forms import UtcDateTimeField


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
