"""Dashboard forms for Billing: they only shape what a person typed into the services' input (plain
JSON-like values, text kept as text) so that the services' one validation names every problem; the
views put those problems next to the fields they concern (`errors_place`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from django import forms

from billing.models import (
    ContractStatus,
    Customer,
    PhaseType,
    Plan,
    Pricing,
    Product,
    ProductType,
    RenewalPolicy,
    UnpausePolicy,
)
from billing.periods import CADENCES
from billing.rating import TIER_TYPES, PricingType
from metrics.models import BillableMetric
from zenskar_site.lib.errors import ValidationFailed

PRICING_TYPE_LABELS = {
    "flat_fee": "Flat fee",
    "per_unit": "Per unit",
    "tiered": "Tiered (graduated)",
    "volume": "Volume",
    "step": "Step",
    "package": "Package",
    "percent": "Percent",
    "matrix": "Matrix",
}
CADENCE_LABELS = {
    "P1D": "Daily",
    "P1W": "Weekly",
    "P1M": "Monthly",
    "P3M": "Quarterly",
    "P6M": "Half-yearly",
    "P1Y": "Yearly",
}
MAX_TIER_ROWS = 100
MAX_MATRIX_LINES = 1000


def _date_input() -> forms.DateInput:
    return forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def errors_place(
    form: forms.Form,
    exc: ValidationFailed,
    *,
    route: Mapping[str, str],
    describe: Callable[[str], str | None] | None = None,
) -> None:
    """Each service error next to its form field: `route` maps an error path (or its prefix before a
    `.` or `[`) to a field, first match wins; the path is kept in the message when it says more than the
    field does (`pricing_data.up_to[1]`)."""
    for path, messages in exc.errors.items():
        prefix, target = next(
            (
                (prefix, name)
                for prefix, name in route.items()
                if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")
            ),
            (None, None),
        )
        field = target if target in form.fields else None
        label = describe(path) if describe is not None else None
        for message in messages:
            if label:
                form.add_error(field, f"{label}: {message}")
            else:
                form.add_error(field, message if path == prefix or not path else f"{path}: {message}")


# --- customers ---

CUSTOMER_ROUTE = {
    name: name
    for name in (
        "customer_name",
        "external_id",
        "email",
        "phone_number",
        "address_line1",
        "address_city",
        "address_state",
        "address_zipCode",
        "address_country",
        "tax_rate",
        "payment_terms_days",
    )
}


class CustomerForm(forms.Form):
    customer_name = forms.CharField(label="Name", max_length=1000, required=False)
    external_id = forms.CharField(
        label="External id",
        max_length=1000,
        required=False,
        help_text="The customer_id your usage records carry for this customer.",
    )
    email = forms.CharField(label="Email", max_length=1000, required=False)
    phone_number = forms.CharField(label="Phone", max_length=1000, required=False)
    address_line1 = forms.CharField(label="Address", max_length=1000, required=False)
    address_city = forms.CharField(label="City", max_length=1000, required=False)
    address_state = forms.CharField(label="State", max_length=1000, required=False)
    address_zipCode = forms.CharField(label="ZIP code", max_length=1000, required=False)
    address_country = forms.CharField(label="Country", max_length=1000, required=False)
    tax_rate = forms.CharField(label="Tax rate (%)", max_length=100, required=False, initial="0")
    payment_terms_days = forms.CharField(label="Payment terms (days)", max_length=100, required=False, initial="30")

    def body(self) -> dict[str, Any]:
        data = self.cleaned_data
        body: dict[str, Any] = {name: _text(data.get(name)) for name in CUSTOMER_ROUTE}
        body["external_id"] = body["external_id"] or None
        body["tax_rate"] = body["tax_rate"] or None
        terms = body.pop("payment_terms_days")
        # The service takes a whole number; text that is not one goes through as text, so it names the field.
        body["payment_terms_days"] = int(terms) if terms.isascii() and terms.isdigit() else (terms or None)
        return body


class CustomerSearchForm(forms.Form):
    q = forms.CharField(label="Search", max_length=255, required=False)


# --- products and pricings ---

PRODUCT_ROUTE = {"name": "name", "sku": "sku", "type": "type", "description": "description"}


class ProductForm(forms.Form):
    name = forms.CharField(label="Name", max_length=1000, required=False)
    type = forms.ChoiceField(
        label="Type",
        choices=ProductType.choices,
        initial=ProductType.METERED,
        help_text="Metered: charged on a billable metric's values. Fixed: a fixed quantity (seats, a platform fee).",
    )
    sku = forms.CharField(label="SKU", max_length=1000, required=False)
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def body(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": _text(data["name"]),
            "type": data["type"],
            "sku": _text(data["sku"]) or None,
            "description": _text(data["description"]),
        }


class PricingForm(forms.Form):
    """A pricing model with the fields that fit it; tiers come as repeated `tier_*` inputs, one per row."""

    name = forms.CharField(label="Name", max_length=1000, required=False)
    pricing_type = forms.ChoiceField(
        label="Pricing model", choices=[(t.value, PRICING_TYPE_LABELS[t.value]) for t in PricingType]
    )
    unit_amount = forms.CharField(label="Unit amount", max_length=100, required=False)
    package_size = forms.CharField(label="Package size", max_length=100, required=False)
    percentage = forms.CharField(label="Percentage", max_length=100, required=False)
    matrix_dimensions = forms.CharField(
        label="Dimensions",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "region\nplan"}),
        help_text="One per line: the metric's group-by field (optionally “name: field”).",
    )
    matrix_values = forms.CharField(
        label="Prices",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "eu, pro = 0.12\nus, pro = 0.10"}),
        help_text="One per line: the dimensions' values, in order, separated by commas, “=” the unit amount.",
    )
    default_unit_amount = forms.CharField(label="Default unit amount", max_length=100, required=False)
    metric = forms.ChoiceField(label="Billable metric", required=False)
    quantity = forms.CharField(label="Quantity", max_length=100, required=False, initial="1")
    unit = forms.CharField(label="Unit", max_length=200, required=False, help_text="Shown on invoices, e.g. CPU hour.")
    cadence = forms.ChoiceField(
        label="Billing period", choices=[(c, CADENCE_LABELS[c]) for c in CADENCES], initial="P1M"
    )
    currency = forms.CharField(
        label="Currency", max_length=10, required=False, help_text="Optional: blank fits a contract in any currency."
    )
    is_recurring = forms.BooleanField(label="Charged every period", required=False, initial=True)
    # The tier rows and the matrix lines: a problem found while reading them, before the service.
    tiers = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, product: Product, metrics: list[BillableMetric], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.product = product
        self.fields["metric"].choices = [("", "Choose a billable metric…")] + [  # type: ignore[attr-defined]
            (m.slug, f"{m.name} ({m.slug})") for m in metrics
        ]
        data = self.data if self.is_bound else {}
        getlist = getattr(data, "getlist", None)
        if getlist is not None:
            columns = [getlist(f"tier_{name}") for name in ("up_to", "unit_amount", "flat_amount")]
            count = min(max((len(c) for c in columns), default=0), MAX_TIER_ROWS)
            self.tier_rows = [
                {
                    name: (col[i] if i < len(col) else "")
                    for name, col in zip(("up_to", "unit_amount", "flat_amount"), columns, strict=True)
                }
                for i in range(count)
            ]
        else:
            self.tier_rows = [
                {"up_to": "100", "unit_amount": "", "flat_amount": ""},
                {"up_to": "", "unit_amount": "", "flat_amount": ""},
            ]
        self.line_errors: dict[str, list[str]] = {}

    @property
    def metered(self) -> bool:
        return self.product.type == ProductType.METERED

    def _tiers(self, pricing_type: str, data: dict[str, Any]) -> None:
        rows = [r for r in self.tier_rows if any(_text(v) for v in r.values())]
        data["up_to"] = [(_text(r["up_to"]) or None) for r in rows]
        data["unit_amount"] = [_text(r["unit_amount"]) or None for r in rows]
        if pricing_type != PricingType.STEP and any(_text(r["flat_amount"]) for r in rows):
            data["flat_amount"] = [_text(r["flat_amount"]) or "0" for r in rows]

    def _matrix(self, data: dict[str, Any]) -> None:
        dimensions = []
        for line in _text(self.cleaned_data.get("matrix_dimensions")).splitlines()[:MAX_MATRIX_LINES]:
            if not line.strip():
                continue
            name, _, column = line.partition(":")
            column = column.strip() if column else name.strip()
            dimensions.append({"name": name.strip(), "column_name": column})
        values = []
        for number, line in enumerate(_text(self.cleaned_data.get("matrix_values")).splitlines()[:MAX_MATRIX_LINES], 1):
            if not line.strip():
                continue
            keys, equals, amount = line.rpartition("=")
            if not equals:
                self.line_errors.setdefault("matrix_values", []).append(
                    f"Line {number}: write the dimensions' values, then “=” and the unit amount."
                )
                continue
            values.append(
                {"dimension_values": [part.strip() for part in keys.split(",")], "unit_amount": amount.strip()}
            )
        data["dimensions"] = dimensions
        data["values"] = values
        default = _text(self.cleaned_data.get("default_unit_amount"))
        if default:
            data["default_unit_amount"] = default

    def pricing_data(self) -> dict[str, Any]:
        """The pricing model as `pricing_data`: only the fields the chosen model uses."""
        pricing_type = self.cleaned_data["pricing_type"]
        data: dict[str, Any] = {"pricing_type": pricing_type}
        unit_amount = _text(self.cleaned_data.get("unit_amount")) or None
        if pricing_type in (PricingType.FLAT_FEE, PricingType.PER_UNIT):
            data["unit_amount"] = unit_amount
        elif pricing_type in TIER_TYPES:
            self._tiers(pricing_type, data)
        elif pricing_type == PricingType.PACKAGE:
            data["unit_amount"] = unit_amount
            data["package_size"] = _text(self.cleaned_data.get("package_size")) or None
        elif pricing_type == PricingType.PERCENT:
            data["percentage"] = _text(self.cleaned_data.get("percentage")) or None
        else:
            self._matrix(data)
        return data

    def body(self) -> dict[str, Any]:
        data = self.cleaned_data
        unit = _text(data.get("unit"))
        quantity: dict[str, Any]
        if self.metered:
            quantity = {"type": "metered", "aggregate_id": data.get("metric") or None, "unit": unit}
        else:
            quantity = {"type": "fixed", "quantity": _text(data.get("quantity")) or "1", "unit": unit}
        return {
            "name": _text(data.get("name")),
            "pricing_data": self.pricing_data(),
            "quantity": quantity,
            "billing_period": {"cadence": data["cadence"]},
            "currency": _text(data.get("currency")).upper() or None,
            "is_recurring": bool(data.get("is_recurring")),
        }

    def route(self) -> dict[str, str]:
        """Where each error path of the pricing services lands on this form."""
        pricing_type = self.cleaned_data.get("pricing_type") if hasattr(self, "cleaned_data") else None
        tiered = pricing_type in TIER_TYPES
        return {
            "pricing_data.pricing_type": "pricing_type",
            "pricing_data.unit_amount": "tiers" if tiered else "unit_amount",
            "pricing_data.up_to": "tiers",
            "pricing_data.flat_amount": "tiers",
            "pricing_data.package_size": "package_size",
            "pricing_data.percentage": "percentage",
            "pricing_data.dimensions": "matrix_dimensions",
            "pricing_data.values": "matrix_values",
            "pricing_data.default_unit_amount": "default_unit_amount",
            "pricing_data": "pricing_type",
            "quantity.aggregate_id": "metric",
            "quantity.quantity": "quantity",
            "quantity.unit": "unit",
            "quantity": "metric" if self.metered else "quantity",
            "billing_period": "cadence",
            "currency": "currency",
            "name": "name",
        }


TIER_PATH = re.compile(r"^pricing_data\.(up_to|unit_amount|flat_amount)\[(\d+)\]\Z")
MATRIX_PATH = re.compile(r"^pricing_data\.(values|dimensions)\[(\d+)\]")
TIER_COLUMNS = {"up_to": "up to", "unit_amount": "unit amount", "flat_amount": "flat amount"}


def pricing_path_label(path: str) -> str | None:
    """A pricing error's path as the form shows it: `pricing_data.up_to[1]` is tier 2's "up to"."""
    if match := TIER_PATH.match(path):
        return f"Tier {int(match.group(2)) + 1}, {TIER_COLUMNS[match.group(1)]}"
    if match := MATRIX_PATH.match(path):
        what = "Price line" if match.group(1) == "values" else "Dimension"
        return f"{what} {int(match.group(2)) + 1}"
    return None


# --- plans ---

PLAN_ROUTE = {"name": "name", "currency": "currency", "description": "description", "pricing_ids": "pricing_ids"}


def pricing_label(pricing: Pricing) -> str:
    label = (
        f"{pricing.product.name}: {pricing.name or PRICING_TYPE_LABELS.get(pricing.pricing_type, pricing.pricing_type)}"
    )
    return f"{label} ({pricing.currency})" if pricing.currency else label


class PlanForm(forms.Form):
    name = forms.CharField(label="Name", max_length=1000, required=False)
    currency = forms.CharField(label="Currency", max_length=10, required=False, initial="USD")
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    pricing_ids = forms.MultipleChoiceField(label="Pricings", required=False, widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args: Any, pricings: list[Pricing], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pricing_ids"].choices = [(str(p.id), pricing_label(p)) for p in pricings]  # type: ignore[attr-defined]

    def body(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": _text(data["name"]),
            "currency": _text(data["currency"]).upper(),
            "description": _text(data["description"]),
            "pricing_ids": list(data["pricing_ids"]),
        }


class PlanPricingsForm(forms.Form):
    pricing_ids = forms.MultipleChoiceField(label="Add pricings", widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args: Any, pricings: list[Pricing], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pricing_ids"].choices = [(str(p.id), pricing_label(p)) for p in pricings]  # type: ignore[attr-defined]


# --- contracts ---

CONTRACT_ROUTE = {
    "name": "name",
    "customer_id": "customer_id",
    "currency": "currency",
    "start_date": "start_date",
    "end_date": "end_date",
    "anchor_date": "anchor_date",
    "status": "status",
    "plan_id": "plan_id",
    "renewal_policy": "renewal_policy",
    "description": "description",
    # A plan's pricing that does not fit shows on the plan's field.
    "phases": "plan_id",
}


class ContractForm(forms.Form):
    name = forms.CharField(label="Name", max_length=1000, required=False)
    customer_id = forms.ChoiceField(label="Customer")
    plan_id = forms.ChoiceField(
        label="Plan",
        required=False,
        help_text="From a plan: its pricings are copied into the first phase. Blank: a contract with no phases yet.",
    )
    currency = forms.CharField(label="Currency", max_length=10, required=False, initial="USD")
    status = forms.ChoiceField(
        label="Status",
        choices=[(ContractStatus.DRAFT, "Draft"), (ContractStatus.ACTIVE, "Active")],
        initial=ContractStatus.DRAFT,
    )
    start_date = forms.CharField(label="Start date", required=False, widget=_date_input())
    end_date = forms.CharField(label="End date", required=False, widget=_date_input(), help_text="Optional, exclusive.")
    anchor_date = forms.CharField(
        label="Billing anchor", required=False, widget=_date_input(), help_text="Blank: the start date."
    )
    renewal_policy = forms.ChoiceField(
        label="Renewal", choices=RenewalPolicy.choices, initial=RenewalPolicy.DO_NOT_RENEW
    )
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, customers: list[Customer], plans: list[Plan], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["customer_id"].choices = [("", "Choose a customer…")] + [  # type: ignore[attr-defined]
            (str(c.id), str(c)) for c in customers
        ]
        self.fields["plan_id"].choices = [("", "None: a blank contract")] + [  # type: ignore[attr-defined]
            (str(p.id), str(p)) for p in plans
        ]

    def body(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": _text(data["name"]),
            "customer_id": data["customer_id"],
            "plan_id": data["plan_id"] or None,
            "currency": _text(data["currency"]).upper(),
            "status": data["status"],
            "start_date": _text(data["start_date"]) or None,
            "end_date": _text(data["end_date"]) or None,
            "anchor_date": _text(data["anchor_date"]) or None,
            "renewal_policy": data["renewal_policy"],
            "description": _text(data["description"]),
        }


PHASE_ROUTE = {"name": "name", "phase_type": "phase_type", "start_date": "start_date", "end_date": "end_date"}


class PhaseForm(forms.Form):
    name = forms.CharField(label="Name", max_length=1000, required=False)
    phase_type = forms.ChoiceField(label="Type", choices=PhaseType.choices, initial=PhaseType.ACTIVE)
    start_date = forms.CharField(
        label="Start date", required=False, widget=_date_input(), help_text="Blank: where the last phase ends."
    )
    end_date = forms.CharField(label="End date", required=False, widget=_date_input())

    def body(self) -> dict[str, Any]:
        data = self.cleaned_data
        body: dict[str, Any] = {"name": _text(data["name"]), "phase_type": data["phase_type"]}
        for name in ("start_date", "end_date"):
            if _text(data[name]):
                body[name] = _text(data[name])
        return body


class PhasePricingForm(forms.Form):
    pricing_id = forms.ChoiceField(label="Pricing")

    def __init__(self, *args: Any, pricings: list[Pricing], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pricing_id"].choices = [("", "Choose a pricing…")] + [  # type: ignore[attr-defined]
            (str(p.id), pricing_label(p)) for p in pricings
        ]


class PauseForm(forms.Form):
    start_date = forms.CharField(label="Pause from", required=False, widget=_date_input())
    end_date = forms.CharField(label="Until", required=False, widget=_date_input(), help_text="Blank: until resumed.")
    unpause_extension_policy = forms.ChoiceField(
        label="On resume", choices=UnpausePolicy.choices, initial=UnpausePolicy.OVERLAP
    )


class DateActionForm(forms.Form):
    """Resume (`on`: the resume date) or expire (`on`: the expiry date); blank is today."""

    on = forms.CharField(label="On", required=False, widget=_date_input(), help_text="Blank: today.")
    reason = forms.CharField(label="Reason", max_length=2000, required=False)
