"""Dashboard forms for invoices: filters, and the inputs of void, credit note and payment.

They only shape what a person typed into the services' input (text kept as text); the services validate
it and name each problem, which the views show next to the field or as a message.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django import forms

from billing.invoicing.models import InvoiceStatus
from billing.models import Customer

PAYMENT_METHODS = [
    ("bank_transfer", "Bank transfer"),
    ("card", "Card"),
    ("cash", "Cash"),
    ("check", "Check"),
    ("direct_debit", "Direct debit"),
    ("other", "Other"),
]
# The statuses the list filters by (upcoming invoices are live views, not documents: shown elsewhere).
LISTED_STATUSES = [choice for choice in InvoiceStatus.choices if choice[0] != InvoiceStatus.UPCOMING]


class InvoiceFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *LISTED_STATUSES])
    customer = forms.ChoiceField(required=False)
    period = forms.CharField(
        required=False,
        label="Billing month",
        widget=forms.DateInput(attrs={"type": "month", "placeholder": "YYYY-MM"}),
        help_text="Invoices whose billing period overlaps this month.",
    )

    def __init__(self, *args: Any, customers: list[Customer], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["customer"].choices = [("", "Any customer")] + [  # type: ignore[attr-defined]
            (str(c.id), c.customer_name) for c in customers
        ]

    def clean_period(self) -> tuple[dt.date, dt.date] | None:
        text = (self.cleaned_data.get("period") or "").strip()
        if not text:
            return None
        match = re.fullmatch(r"(\d{4})-(\d{2})", text)
        if match is None or not 1 <= int(match.group(2)) <= 12:
            raise forms.ValidationError("Expected a month as YYYY-MM.")
        first = dt.date(int(match.group(1)), int(match.group(2)), 1)
        following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return first, following


class VoidForm(forms.Form):
    reason = forms.CharField(max_length=10_000, widget=forms.TextInput(attrs={"placeholder": "Why is it void?"}))


class DiscardForm(forms.Form):
    reason = forms.CharField(required=False, max_length=10_000)


class CreditNoteForm(forms.Form):
    credit_note_amount = forms.CharField(
        label="Amount", max_length=40, widget=forms.TextInput(attrs={"inputmode": "decimal"})
    )
    reason = forms.CharField(max_length=10_000)

    def body(self) -> dict[str, Any]:
        return {
            "credit_note_amount": self.cleaned_data["credit_note_amount"].strip(),
            "reason": self.cleaned_data["reason"],
        }


class PaymentForm(forms.Form):
    amount = forms.CharField(max_length=40, widget=forms.TextInput(attrs={"inputmode": "decimal"}))
    payment_method = forms.ChoiceField(choices=PAYMENT_METHODS, label="Method")
    timestamp = forms.CharField(
        required=False,
        label="Paid at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Blank: now.",
    )

    def body(self, *, invoice_id: Any, currency: str) -> dict[str, Any]:
        amount = self.cleaned_data["amount"].strip()
        data: dict[str, Any] = {
            "amount": amount,
            "currency_code": currency,
            "payment_method": self.cleaned_data["payment_method"],
            "payment_parts": [{"invoice_id": str(invoice_id), "amount": amount}],
        }
        stamp = (self.cleaned_data.get("timestamp") or "").strip()
        if stamp:
            data["timestamp"] = stamp if ("+" in stamp or stamp.endswith("Z")) else stamp + "+00:00"
        return data
