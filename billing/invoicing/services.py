"""Writes for invoices (SPEC §9): generation, live drafts, approval, void, discard, credit notes, payments.

Every change is audited (object type `invoice`, `credit_note`, `payment`). Transitions that the invoice's
status does not allow are a Conflict (409) naming the status; bad input is a 400 naming the field.
Settlement amounts are recomputed from the credit notes and payment parts under the invoice's row lock,
never added to a stored total.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from billing.customers import json_ready
from billing.inputs import Fields, uuid_value
from billing.invoicing.compute import (
    LINE_FIELDS,
    InvoiceComputation,
    computation_of,
    contract_pauses_many,
    contract_pricing_links_many,
    invoice_compute,
    invoice_line_rows,
    invoice_line_values,
    invoice_periods,
    invoice_quantities_prefetch,
)
from billing.invoicing.dispatch import contract_drafts_refresh_on_commit
from billing.invoicing.document import invoice_parties
from billing.invoicing.drift import BILLED_STATUSES, adjustment_lines, invoice_drift, live_invoice_compute
from billing.invoicing.models import (
    FROZEN_STATUSES,
    LIVE_STATUSES,
    CreditNote,
    DocumentKind,
    DocumentSequence,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentPart,
)
from billing.models import Contract, ContractStatus, PhasePricing
from billing.periods import PauseSpan
from billing.rating import currency_exponent
from zenskar_site.accounts.actors import Actor, system_actor
from zenskar_site.accounts.models import Organisation
from zenskar_site.accounts.services import AuditChange, audit_record, audit_records
from zenskar_site.lib.errors import Conflict, NotFound, ValidationFailed
from zenskar_site.lib.sql import on_postgres, rows_insert
from zenskar_site.lib.text import printable

logger = logging.getLogger(__name__)

# Contracts the generator bills: a paused contract still bills its usage, an expired one its last period.
BILLED_CONTRACT_STATUSES = (ContractStatus.ACTIVE, ContractStatus.PAUSED, ContractStatus.EXPIRED)
# Drafts one generator step makes, at most: a step's own costs (its queries, its commit, the task's
# round trip) are spread over that many drafts, and the month-end run's last step keeps one worker
# process busy that long while the other has nothing left.
GENERATE_BATCH = 500
# Contracts one generator step looks at, at most: a step stays short when few periods are due.
GENERATE_SCAN = 1000
# What the generator reads of a contract and its customer: what computing and writing a draft use. A
# field left out is read by one more query per contract when used (the step's query-count test fails).
GENERATOR_CONTRACT_FIELDS = (
    "id",
    "organisation_id",
    "customer_id",
    "status",
    "currency",
    "start_date",
    "end_date",
    "anchor_date",
    "expiry_date",
    "customer__id",
    "customer__organisation_id",
    "customer__external_id",
    "customer__tax_rate",
)
# Invoices `invoices_reconcile` recomputes together (their pricings and quantities read at once).
RECONCILE_CHUNK = 200
PAYABLE_STATUSES = (InvoiceStatus.APPROVED, InvoiceStatus.PARTIALLY_PAID)
MAX_PAYMENT_PARTS = 100
MONEY_MAX = Decimal("99999999999")


def invoice_snapshot(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": str(invoice.id),
        "status": invoice.status,
        "number": invoice.number,
        "contract_id": str(invoice.contract_id),
        "customer_id": str(invoice.customer_id),
        "currency": invoice.currency,
        "period_start": json_ready(invoice.period_start),
        "period_end": json_ready(invoice.period_end),
        "issue_date": json_ready(invoice.issue_date),
        "due_date": json_ready(invoice.due_date),
        **{
            name: str(getattr(invoice, name))
            for name in ("subtotal", "tax", "total", "amount_credited", "amount_paid", "amount_due")
        },
    }


def _audit(*, actor: Actor, invoice: Invoice, action: str, before: dict[str, Any] | None, reason: str = "") -> None:
    audit_record(
        actor=actor,
        action=action,
        object_type="invoice",
        object_id=str(invoice.id),
        before=before,
        after=invoice_snapshot(invoice),
        reason=reason,
    )


# --- lines ---


def _lines_write(invoice: Invoice, computation: InvoiceComputation) -> None:
    """Replace a live invoice's lines and totals with `computation` (the caller holds its row lock)."""
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(invoice_line_rows(invoice, computation))
    _totals_set(invoice, computation)
    invoice.save()


def _totals_set(invoice: Invoice, computation: InvoiceComputation) -> None:
    invoice.currency = computation.currency
    invoice.subtotal = computation.subtotal
    invoice.tax_rate = computation.tax_rate
    invoice.tax = computation.tax
    invoice.total = computation.total
    invoice.amount_due = computation.total - invoice.amount_credited - invoice.amount_paid
    invoice.flagged = list(computation.flagged)
    invoice.computed_at = timezone.now()


def invoice_line_signatures(invoice: Invoice) -> list[tuple[Any, ...]]:
    return [
        (
            line.description,
            str(line.product_id) if line.product_id else None,
            str(line.pricing_id) if line.pricing_id else None,
            line.pricing_type,
            line.period_start,
            line.period_end,
            line.quantity,
            line.unit,
            line.unit_amount,
            line.breakdown,
            Decimal(line.amount),
            line.adjustment_of_start,
            line.adjustment_of_end,
        )
        for line in invoice.lines.all()  # ordered by position, id (Meta); prefetched lines serve it
    ]


def invoice_differs(invoice: Invoice, computation: InvoiceComputation) -> bool:
    """Whether the stored lines or totals differ from a fresh computation."""
    if (invoice.subtotal, invoice.tax, invoice.total) != (computation.subtotal, computation.tax, computation.total):
        return True
    return invoice_line_signatures(invoice) != [line.signature() for line in computation.lines]


def _compute(invoice: Invoice) -> InvoiceComputation:
    """A live invoice's fresh computation: its period's lines and the adjustments it carries (drift.py)."""
    return live_invoice_compute(
        contract=invoice.contract, period_start=invoice.period_start, period_end=invoice.period_end, carrier=invoice
    )


@transaction.atomic
def invoice_refresh(*, invoice_id: Any) -> bool:
    """Recompute a live (upcoming or draft) invoice from the current metric values; True if it changed.

    A frozen or discarded invoice is left alone (False): approval froze it.
    """
    invoice = Invoice.objects.select_for_update().select_related("contract__customer").filter(id=invoice_id).first()
    if invoice is None or invoice.status not in LIVE_STATUSES:
        return False
    computation = _compute(invoice)
    if not invoice_differs(invoice, computation):
        return False
    before = invoice_snapshot(invoice)
    _lines_write(invoice, computation)
    if before["total"] != str(invoice.total):
        _audit(
            actor=system_actor(organisation=invoice.contract.organisation),
            invoice=invoice,
            action="invoice.recompute",
            before=before,
        )
    return True


def invoice_drafts_refresh(*, metric_id: int, customer_ids: Iterable[str]) -> int:
    """Recompute the live invoices that bill `metric_id` to any of `customer_ids`; returns how many changed."""
    keys = [str(key) for key in customer_ids]
    uuids = [key for key in keys if uuid_value(key) is not None]
    contracts = (
        PhasePricing.objects.filter(pricing__metric_id=metric_id)
        .filter(Q(phase__contract__customer__external_id__in=keys) | Q(phase__contract__customer_id__in=uuids))
        .values_list("phase__contract_id", flat=True)
        .distinct()
    )
    changed = 0
    for invoice_id in Invoice.objects.filter(contract_id__in=contracts, status__in=LIVE_STATUSES).values_list(
        "id", flat=True
    ):
        changed += invoice_refresh(invoice_id=invoice_id)
    return changed


def contract_drafts_refresh(*, contract_id: Any) -> int:
    """Recompute every live invoice of a contract (after a change of its terms, phases or pricings, or a
    change of which draft carries the adjustments of its approved invoices); returns how many changed."""
    changed = 0
    for invoice_id in Invoice.objects.filter(contract_id=contract_id, status__in=LIVE_STATUSES).values_list(
        "id", flat=True
    ):
        changed += invoice_refresh(invoice_id=invoice_id)
    return changed


# --- generation ---


def _invoice_create(
    *, contract: Contract, start: dt.date, end: dt.date, kind: str, actor: Actor, adjustments: bool = True
) -> Invoice | None:
    """Insert the invoice and its lines in one transaction; None when the period's invoice exists.

    `adjustments=False` when the caller knows the contract has no approved invoice (nothing to adjust):
    the generator saves a query per contract.
    """
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                organisation=contract.organisation,
                customer=contract.customer,
                contract=contract,
                kind=kind,
                status=InvoiceStatus.DRAFT,
                currency=contract.currency,
                period_start=start,
                period_end=end,
            )
            _lines_write(
                invoice,
                live_invoice_compute(contract=contract, period_start=start, period_end=end, carrier=invoice)
                if adjustments
                else invoice_compute(contract=contract, period_start=start, period_end=end),
            )
            _audit(actor=actor, invoice=invoice, action="invoice.generate", before=None)
            if adjustments:
                # A draft for an earlier period than another draft takes over the adjustments that one carried.
                later = Invoice.objects.filter(
                    contract=contract, status=InvoiceStatus.DRAFT, period_start__gt=start
                ).exclude(id=invoice.id)
                if later.exists():
                    contract_drafts_refresh_on_commit(contract_id=contract.id)
    except IntegrityError:
        # The unique constraint on (contract, period) for generated invoices: another run made it first.
        if (
            kind == InvoiceKind.PERIOD
            and Invoice.objects.filter(contract=contract, kind=kind, period_start=start, period_end=end).exists()
        ):
            return None
        raise
    return invoice


def invoices_generate_due(*, now: dt.datetime, limit: int = GENERATE_BATCH) -> int:
    """Create the draft of every billed contract's closed periods that have none; returns how many.

    A period closes at UTC midnight of its end day. Catches up on every closed period since the
    contract's start. Safe to run twice or concurrently (see `invoices_generate_due_step`). At most
    `limit` invoices per call.
    """
    made, resume = 0, None
    while made < limit:
        step_made, resume = invoices_generate_due_step(now=now, from_contract=resume, limit=limit - made)
        made += step_made
        if resume is None:
            break
    return made


def invoices_generate_due_step(
    *,
    now: dt.datetime,
    from_contract: str | None = None,
    limit: int = GENERATE_BATCH,
    scan: int = GENERATE_SCAN,
    then: Callable[[str], object] | None = None,
) -> tuple[int, str | None]:
    """One bounded step of the generator: the drafts due to the billed contracts from the id
    `from_contract` on (in id order; None: from the first), at most `limit` of them, from at most `scan`
    contracts. Returns how many it made and the contract id the next step starts from (None: every
    contract has been looked at).

    A step reads its contracts' pricings and periods made a slice at a time, the metered quantities of
    its drafts in one query per period (one at a month's end), and writes its drafts in one
    transaction: the invoices, their lines and their audit entries in one INSERT each (a worker killed
    meanwhile leaves none of them). Safe to run twice or concurrently: the invoice's insert is the claim
    (ON CONFLICT DO NOTHING on the unique constraint on contract and period), and a period whose invoice
    another run made is skipped.

    `then` is called with where the next step starts (when there is one) as soon as it is known, before
    this step computes its drafts: the task enqueues the next step there, which runs beside this one
    on another worker process (their contracts never overlap).
    """
    today = now.astimezone(dt.UTC).date()
    billed = Contract.objects.filter(status__in=BILLED_CONTRACT_STATUSES, start_date__lt=today).order_by("id")
    due: list[tuple[Contract, dt.date, dt.date]] = []
    links: dict[Any, list[PhasePricing]] = {}
    pauses: dict[Any, list[PauseSpan]] = {}
    resume, looked, first = from_contract, 0, None
    # Contracts are read `limit` at a time (each slice's pricings, pauses and periods made in one query
    # each) until `limit` periods are due or `scan` contracts have been looked at.
    while len(due) < limit and looked < scan:
        size = min(limit, scan - looked)
        contracts = billed.filter(id__gte=resume) if resume is not None else billed
        batch = list(contracts.select_related("customer").only(*GENERATOR_CONTRACT_FIELDS)[: size + 1])
        # The next slice (or step) starts at the first contract this one does not look at.
        resume = str(batch.pop().id) if len(batch) > size else None
        looked += len(batch)
        if not batch:
            break
        _organisations_attach(batch)
        first = batch[0].id if first is None else first
        # The slice's contracts are the billed ones in its range of ids: the queries about them name the
        # range, not each id (the few other contracts in it are left out).
        ids, id_range = [contract.id for contract in batch], (batch[0].id, batch[-1].id)
        links.update(contract_pricing_links_many(contract_ids=ids, id_range=id_range))
        pauses.update(contract_pauses_many(contract_ids=ids, id_range=id_range))
        existing = set(
            Invoice.objects.filter(
                contract_id__gte=id_range[0], contract_id__lte=id_range[1], kind=InvoiceKind.PERIOD
            ).values_list("contract_id", "period_start", "period_end")
        )
        for contract in batch:
            periods = [
                (contract, period.period_start, period.period_end)
                for period in invoice_periods(contract=contract, until=today, links=links[contract.id])
                if period.period_end <= today and (contract.id, period.period_start, period.period_end) not in existing
            ]
            if len(due) + len(periods) > limit:
                # This contract's periods past the limit are the next step's: it starts here again.
                due.extend(periods[: limit - len(due)])
                resume = str(contract.id)
                break
            due.extend(periods)
        if resume is None:
            break
    if then is not None and resume is not None:
        then(resume)
    if not due:
        return 0, resume
    # Every contract with a period due is in the step's range of ids.
    made = _period_invoices_create(due=due, links=links, pauses=pauses, id_range=(first, due[-1][0].id))
    return made, resume


def _organisations_attach(contracts: Sequence[Contract]) -> None:
    """Each contract's organisation, one instance per organisation (not one per contract, as a join
    would make)."""
    organisations = Organisation.objects.in_bulk({contract.organisation_id for contract in contracts})
    for contract in contracts:
        contract.organisation = organisations[contract.organisation_id]


def _period_invoices_create(
    *,
    due: Sequence[tuple[Contract, dt.date, dt.date]],
    links: Mapping[Any, Sequence[PhasePricing]],
    pauses: Mapping[Any, Sequence[PauseSpan]],
    id_range: tuple[Any, Any],
) -> int:
    """Insert the drafts of `due` (contract, period start, period end), their lines and audit entries in one
    transaction; returns how many were inserted (a period whose invoice exists is skipped). `id_range`
    holds the ids of every contract of `due` (and may hold others)."""
    # A contract with an approved invoice may owe adjustments (drift.py): its drafts are made one by one,
    # as `invoice_refresh` computes them. The others (nearly all at a month's end) are made together.
    adjusted = set(
        Invoice.objects.filter(
            contract_id__gte=id_range[0], contract_id__lte=id_range[1], status__in=BILLED_STATUSES
        ).values_list("contract_id", flat=True)
    )
    made = 0
    for contract, start, end in due:
        if contract.id in adjusted:
            made += _period_invoice_create_alone(contract=contract, start=start, end=end)
    due = [(contract, start, end) for contract, start, end in due if contract.id not in adjusted]
    quantities = invoice_quantities_prefetch(
        invoices=[(contract, links[contract.id], start, end) for contract, start, end in due]
    )
    drafts: list[tuple[Invoice, InvoiceComputation]] = []
    for contract, start, end in due:
        try:
            computation = invoice_compute(
                contract=contract,
                period_start=start,
                period_end=end,
                links=links[contract.id],
                pauses=pauses[contract.id],
                quantities=quantities,
            )
        except Exception:
            # One contract that cannot be billed (a pricing its metric no longer fits) never holds back the
            # others: it is logged and tried again by the next run.
            logger.exception("The draft of contract %s for %s to %s could not be computed.", contract.id, start, end)
            continue
        invoice = Invoice(
            organisation=contract.organisation,
            customer=contract.customer,
            contract=contract,
            kind=InvoiceKind.PERIOD,
            status=InvoiceStatus.DRAFT,
            period_start=start,
            period_end=end,
        )
        _totals_set(invoice, computation)
        drafts.append((invoice, computation))
    with transaction.atomic():
        inserted = _drafts_insert([invoice for invoice, _ in drafts])
        skipped = {(i.contract_id, i.period_start, i.period_end) for i, _ in drafts if i.id not in inserted}
        if skipped:
            # Another run's invoice for the period. Anything else refused is an error (SQLite's INSERT OR
            # IGNORE skips a failed CHECK too).
            made_elsewhere = set(
                Invoice.objects.filter(
                    contract__in={contract_id for contract_id, _, _ in skipped}, kind=InvoiceKind.PERIOD
                ).values_list("contract_id", "period_start", "period_end")
            )
            if not skipped <= made_elsewhere:
                raise IntegrityError(f"invoices refused for {sorted(skipped - made_elsewhere, key=str)[:5]}")
        drafts = [(invoice, computation) for invoice, computation in drafts if invoice.id in inserted]
        _draft_lines_insert(drafts)
        audit_records(
            changes=[
                AuditChange(
                    actor=system_actor(organisation=invoice.organisation),
                    action="invoice.generate",
                    object_type="invoice",
                    object_id=str(invoice.id),
                    after=invoice_snapshot(invoice),
                )
                for invoice, _ in drafts
            ]
        )
    return made + len(drafts)


# The claim: a period's invoice exists once (the partial unique constraint invoice_one_per_contract_period).
_CLAIM = "ON CONFLICT (contract_id, period_start, period_end) WHERE kind = 'period' DO NOTHING RETURNING id"


def _drafts_insert(invoices: Sequence[Invoice]) -> set[Any]:
    """Insert the unsaved drafts in one statement, skipping each period whose invoice exists (the claim);
    returns the ids of those inserted.

    PostgreSQL: every column of each draft as it stands, in binary arrays (`rows_insert`), its creation
    stamped with one clock reading. SQLite: Django's bulk_create, then the ids read back.
    """
    if not invoices:
        return set()
    if not on_postgres():
        Invoice.objects.bulk_create(invoices, ignore_conflicts=True)
        return set(Invoice.objects.filter(id__in=[invoice.id for invoice in invoices]).values_list("id", flat=True))
    now = timezone.now()
    columns = [field.attname for field in Invoice._meta.concrete_fields]
    for invoice in invoices:
        invoice.created_at = invoice.updated_at = now
    rows = [[getattr(invoice, name) for name in columns] for invoice in invoices]
    return {row[0] for row in rows_insert(Invoice, columns=columns, rows=rows, then=_CLAIM)}


def _draft_lines_insert(drafts: Sequence[tuple[Invoice, InvoiceComputation]]) -> None:
    """The lines of inserted drafts in one statement (PostgreSQL: `rows_insert`; SQLite: bulk_create)."""
    if not on_postgres():
        InvoiceLine.objects.bulk_create(
            [row for invoice, computation in drafts for row in invoice_line_rows(invoice, computation)], batch_size=1000
        )
        return
    rows = [
        (uuid.uuid4(), invoice.id, *values)
        for invoice, computation in drafts
        for values in invoice_line_values(computation)
    ]
    if rows:
        rows_insert(InvoiceLine, columns=("id", "invoice_id", *LINE_FIELDS), rows=rows)


def _period_invoice_create_alone(*, contract: Contract, start: dt.date, end: dt.date) -> int:
    try:
        invoice = _invoice_create(
            contract=contract,
            start=start,
            end=end,
            kind=InvoiceKind.PERIOD,
            actor=system_actor(organisation=contract.organisation),
        )
    except Exception:
        logger.exception("The draft of contract %s for %s to %s could not be made.", contract.id, start, end)
        return 0
    return int(invoice is not None)


def invoice_generate(*, actor: Actor, contract_id: Any, from_date: Any, to_date: Any) -> Invoice:
    """A draft for any range of a contract, on demand (dates, or Unix seconds as Zenskar sends them)."""
    fields = Fields({"contract_id": contract_id, "from_date": from_date, "to_date": to_date})
    key = fields.uuid("contract_id", required=True)
    start = _date_or_seconds(fields, "from_date")
    end = _date_or_seconds(fields, "to_date")
    if start is not None and end is not None and end <= start:
        fields.fail("to_date", "to_date must be after from_date.")
    fields.raise_if_errors()
    assert key is not None
    assert start is not None
    assert end is not None
    contract = (
        Contract.objects.select_related("customer", "organisation")
        .filter(organisation=actor.organisation, id=key)
        .first()
    )
    if contract is None:
        raise NotFound(f"No contract with id {printable(str(contract_id))[:100]!r} in this organisation.")
    if contract.status == ContractStatus.DRAFT:
        raise Conflict("A draft contract bills nothing: activate it first.")
    invoice = _invoice_create(contract=contract, start=start, end=end, kind=InvoiceKind.ON_DEMAND, actor=actor)
    assert invoice is not None
    return invoice


def _date_or_seconds(fields: Fields, name: str) -> dt.date | None:
    value = fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC).date()
        except (OverflowError, OSError, ValueError):
            fields.fail(name, "Expected Unix seconds or a date (YYYY-MM-DD).")
            return None
    return fields.date(name, required=True)


# --- approval, void, discard ---


def invoice_locked(*, actor: Actor, invoice_id: Any) -> Invoice:
    key = uuid_value(invoice_id)
    invoice = (
        Invoice.objects.select_for_update()
        .select_related("contract__customer")
        .filter(organisation=actor.organisation, id=key)
        .first()
        if key is not None
        else None
    )
    if invoice is None:
        raise NotFound(f"No invoice with id {printable(str(invoice_id))[:100]!r} in this organisation.")
    return invoice


def document_number_take(*, organisation: Organisation, kind: str) -> str:
    """The next number of the organisation's sequence, in the caller's transaction (gap-free: a rollback
    returns it). The UPDATE locks the counter row until commit, so concurrent takers queue."""
    for _ in range(2):
        if DocumentSequence.objects.filter(organisation=organisation, kind=kind).update(next_value=F("next_value") + 1):
            value = (
                DocumentSequence.objects.filter(organisation=organisation, kind=kind)
                .values_list("next_value", flat=True)
                .get()
            )
            return f"{DocumentKind(kind).label}-{value - 1:06d}"
        # First document of the kind: create the counter (a concurrent creator wins; then update it).
        DocumentSequence.objects.bulk_create(
            [DocumentSequence(organisation=organisation, kind=kind, next_value=1)], ignore_conflicts=True
        )
    raise RuntimeError("the document sequence could not be created")


@transaction.atomic
def invoice_approve(*, actor: Actor, invoice_id: Any) -> Invoice:
    """Freeze a draft: recompute it once more, number it, date it. Approving again returns it unchanged."""
    invoice = invoice_locked(actor=actor, invoice_id=invoice_id)
    if invoice.status in FROZEN_STATUSES:
        return invoice
    if invoice.status != InvoiceStatus.DRAFT:
        raise Conflict(f"Only a draft invoice can be approved; this one is {invoice.status}.")
    before = invoice_snapshot(invoice)
    computation = _compute(invoice)
    if invoice_differs(invoice, computation):
        _lines_write(invoice, computation)
    now = timezone.now()
    invoice.number = document_number_take(organisation=actor.organisation, kind=DocumentKind.INVOICE)
    invoice.issue_date = now.astimezone(dt.UTC).date()
    invoice.due_date = invoice.issue_date + dt.timedelta(days=invoice.contract.customer.payment_terms_days)
    invoice.approved_at = now
    invoice.parties = invoice_parties(invoice)  # as the document showed them when it was approved
    invoice.status = InvoiceStatus.APPROVED if invoice.amount_due > 0 else InvoiceStatus.PAID
    invoice.save()
    _audit(actor=actor, invoice=invoice, action="invoice.approve", before=before)
    return invoice


def _reason(reason: Any, *, required: bool) -> str:
    fields = Fields({"reason": reason})
    text = fields.text("reason", max_length=10_000, required=required)
    fields.raise_if_errors()
    return text


@transaction.atomic
def invoice_void(*, actor: Actor, invoice_id: Any, reason: Any) -> Invoice:
    """Void an approved invoice: it owes nothing more, its number stays."""
    text = _reason(reason, required=True)
    invoice = invoice_locked(actor=actor, invoice_id=invoice_id)
    if invoice.status != InvoiceStatus.APPROVED:
        detail = " (it has payments: record a credit note instead)" if invoice.amount_paid else ""
        raise Conflict(f"Only an approved invoice can be voided; this one is {invoice.status}{detail}.")
    before = invoice_snapshot(invoice)
    invoice.status = InvoiceStatus.VOID
    invoice.amount_due = Decimal(0)
    invoice.void_reason = text
    invoice.voided_at = timezone.now()
    invoice.save(update_fields=["status", "amount_due", "void_reason", "voided_at", "updated_at"])
    _audit(actor=actor, invoice=invoice, action="invoice.void", before=before, reason=text)
    # Its own drift and the adjustments it carried are no longer owed: the contract's drafts follow.
    contract_drafts_refresh_on_commit(contract_id=invoice.contract_id)
    return invoice


@transaction.atomic
def invoice_discard(*, actor: Actor, invoice_id: Any, reason: Any = "") -> Invoice:
    """Discard a draft: it is never approved (and the generator does not make its period again)."""
    text = _reason(reason, required=False)
    invoice = invoice_locked(actor=actor, invoice_id=invoice_id)
    if invoice.status not in LIVE_STATUSES:
        raise Conflict(f"Only a draft invoice can be discarded; this one is {invoice.status}.")
    before = invoice_snapshot(invoice)
    invoice.status = InvoiceStatus.DISCARDED
    invoice.save(update_fields=["status", "updated_at"])
    _audit(actor=actor, invoice=invoice, action="invoice.discard", before=before, reason=text)
    # The adjustments it carried move on to the contract's next draft.
    contract_drafts_refresh_on_commit(contract_id=invoice.contract_id)
    return invoice


# --- credit notes and payments ---


def _settle(invoice: Invoice) -> None:
    """Amounts credited, paid and due from the invoice's credit notes and payment parts; its status."""
    credited = invoice.credit_notes.aggregate(total=Sum("amount"))["total"] or Decimal(0)
    paid = invoice.payment_parts.aggregate(total=Sum("amount"))["total"] or Decimal(0)
    invoice.amount_credited = Decimal(credited)
    invoice.amount_paid = Decimal(paid)
    invoice.amount_due = invoice.total - invoice.amount_credited - invoice.amount_paid
    if invoice.amount_due <= 0:
        invoice.status = InvoiceStatus.PAID
    elif invoice.amount_paid > 0:
        invoice.status = InvoiceStatus.PARTIALLY_PAID
    else:
        invoice.status = InvoiceStatus.APPROVED
    invoice.save(update_fields=["amount_credited", "amount_paid", "amount_due", "status", "updated_at"])


def _money(fields: Fields, name: str, currency: str) -> Decimal | None:
    places = currency_exponent(currency=currency)
    amount = fields.decimal(name, default=None, minimum=Decimal(0), maximum=MONEY_MAX, places=places)
    if amount is None and not fields.errors.get(fields.path(name)):
        fields.fail(name, "This field is required: an amount in the currency's major unit.")
    elif amount is not None and amount <= 0:
        fields.fail(name, "Must be more than 0.")
        return None
    return amount


@transaction.atomic
def credit_note_create(*, actor: Actor, invoice_id: Any, data: Mapping[str, Any]) -> CreditNote:
    """A credit note of up to what remains due on an approved invoice (CN-000001), with a reason."""
    invoice = invoice_locked(actor=actor, invoice_id=invoice_id)
    fields = Fields(data)
    fields.refuse_unknown(("credit_note_amount", "amount", "reason"))
    name = "credit_note_amount" if fields.has("credit_note_amount") or not fields.has("amount") else "amount"
    amount = _money(fields, name, invoice.currency)
    reason = fields.text("reason", max_length=10_000, required=True)
    fields.raise_if_errors()
    assert amount is not None
    if invoice.status not in PAYABLE_STATUSES:
        raise Conflict(f"A credit note needs an approved, unpaid invoice; this one is {invoice.status}.")
    if amount > invoice.amount_due:
        raise Conflict(f"The credit note ({amount}) is more than what remains of the invoice ({invoice.amount_due}).")
    before = invoice_snapshot(invoice)
    note = CreditNote.objects.create(
        organisation=actor.organisation,
        invoice=invoice,
        number=document_number_take(organisation=actor.organisation, kind=DocumentKind.CREDIT_NOTE),
        amount=amount,
        currency=invoice.currency,
        reason=reason,
    )
    _settle(invoice)
    audit_record(
        actor=actor,
        action="credit_note.create",
        object_type="credit_note",
        object_id=str(note.id),
        after={"number": note.number, "invoice_id": str(invoice.id), "amount": str(amount)},
        reason=reason,
    )
    _audit(actor=actor, invoice=invoice, action="invoice.credit", before=before, reason=reason)
    return note


PAYMENT_FIELDS = ("amount", "currency_code", "payment_method", "timestamp", "payment_parts")


@transaction.atomic
def payment_record(*, actor: Actor, data: Mapping[str, Any]) -> Payment:
    """A payment recorded by hand, split over invoices; each part at most what its invoice still owes."""
    fields = Fields(data)
    fields.refuse_unknown(PAYMENT_FIELDS)
    currency = fields.currency("currency_code", required=True)
    amount = _money(fields, "amount", currency) if currency else None
    method = fields.text("payment_method", max_length=64)
    timestamp = _timestamp(fields, "timestamp")
    raw_parts = fields.get("payment_parts")
    if not isinstance(raw_parts, list) or not raw_parts or len(raw_parts) > MAX_PAYMENT_PARTS:
        fields.fail("payment_parts", f"Expected a list of 1 to {MAX_PAYMENT_PARTS} {{invoice_id, amount}} objects.")
        raw_parts = []
    parts: list[tuple[Any, Decimal]] = []
    for index, raw in enumerate(raw_parts):
        part = Fields(raw, prefix=f"payment_parts[{index}]", errors=fields.errors)
        if not isinstance(raw, dict):
            fields.fail(f"payment_parts[{index}]", "Expected an object {invoice_id, amount}.")
            continue
        part.refuse_unknown(("invoice_id", "amount"))
        invoice_key = part.uuid("invoice_id", required=True)
        part_amount = _money(part, "amount", currency) if currency else None
        if invoice_key is not None and part_amount is not None:
            if any(key == invoice_key for key, _ in parts):
                part.fail("invoice_id", "This invoice is already in another part of the payment.")
            parts.append((invoice_key, part_amount))
    if amount is not None and parts and sum(a for _, a in parts) != amount:
        fields.fail("payment_parts", f"The parts add up to {sum(a for _, a in parts)}, not the amount {amount}.")
    fields.raise_if_errors()
    assert amount is not None
    # Locked in one order, so two payments over the same invoices never deadlock.
    invoices = {
        invoice.id: invoice
        for invoice in Invoice.objects.select_for_update()
        .filter(organisation=actor.organisation, id__in=[key for key, _ in parts])
        .order_by("id")
    }
    for index, (key, part_amount) in enumerate(parts):
        found = invoices.get(key)
        if found is None:
            raise ValidationFailed({f"payment_parts[{index}].invoice_id": [f"No invoice {key} in this organisation."]})
        if found.currency != currency:
            raise ValidationFailed(
                {f"payment_parts[{index}].amount": [f"The invoice is in {found.currency}, the payment in {currency}."]}
            )
        if found.status not in PAYABLE_STATUSES:
            raise Conflict(f"Invoice {found.number or found.id} cannot be paid: it is {found.status}.")
        if part_amount > found.amount_due:
            raise Conflict(
                f"Paying {part_amount} is more than invoice {found.number} owes ({found.amount_due} {currency})."
            )
    payment = Payment.objects.create(
        organisation=actor.organisation,
        amount=amount,
        currency_code=currency,
        payment_method=method,
        timestamp=timestamp or timezone.now(),
    )
    PaymentPart.objects.bulk_create(
        PaymentPart(payment=payment, invoice=invoices[key], amount=part_amount) for key, part_amount in parts
    )
    for key, _ in parts:
        invoice = invoices[key]
        before = invoice_snapshot(invoice)
        _settle(invoice)
        _audit(actor=actor, invoice=invoice, action="invoice.payment", before=before)
    audit_record(
        actor=actor,
        action="payment.record",
        object_type="payment",
        object_id=str(payment.id),
        after={
            "amount": str(amount),
            "currency_code": currency,
            "payment_method": method,
            "payment_parts": [{"invoice_id": str(key), "amount": str(a)} for key, a in parts],
        },
    )
    return payment


def _timestamp(fields: Fields, name: str) -> dt.datetime | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    fields.fail(name, "Expected Unix seconds or an ISO 8601 date-time.")
    return None


# --- reconcile ---


def invoices_reconcile(
    *, organisation_ids: Sequence[Any] | None = None, live_only: bool = False
) -> tuple[list[Invoice], list[Invoice]]:
    """(drafts whose lines differ from a fresh computation, approved invoices with a drift to settle: an
    increase not billed yet by an approved adjustment, or a decrease; see `invoice_drift`). `live_only`:
    the drafts alone (no drift is looked for).

    Drafts are recomputed RECONCILE_CHUNK at a time, their pricings and metered quantities read together;
    each computation is the one `invoice_refresh` makes (the adjustment lines a draft carries included).
    """
    invoices = (
        Invoice.objects.select_related("contract__customer")
        .prefetch_related("contract__pauses", "lines")
        .exclude(status=InvoiceStatus.DISCARDED)
    )
    if live_only:
        invoices = invoices.filter(status__in=LIVE_STATUSES)
    if organisation_ids is not None:
        invoices = invoices.filter(organisation_id__in=organisation_ids)
    drafts: list[Invoice] = []
    drifted: list[Invoice] = []
    chunk: list[Invoice] = []
    for invoice in invoices.order_by("created_at", "id").iterator(chunk_size=RECONCILE_CHUNK):
        chunk.append(invoice)
        if len(chunk) == RECONCILE_CHUNK:
            _reconcile_chunk(chunk, drafts, drifted)
            chunk = []
    _reconcile_chunk(chunk, drafts, drifted)
    return drafts, drifted


def drafts_reconcile() -> tuple[int, int]:
    """Recompute every draft that differs from a fresh computation; (how many differed, how many of them
    could not be recomputed).

    A draft follows its usage and its contract through refreshes queued after each change commits. A
    refresh can miss it: the broker was down at that commit, a worker died with the task, or the change
    committed while the generator was making the draft (its refresh looked for drafts before the draft was
    committed, and the generator had read the values before the change). Approval recomputes a draft
    anyway, so nothing stale is billed; this sweep (beat, DRAFTS_RECONCILE_SECONDS) bounds how long a
    person may see one. A draft that cannot be recomputed is logged and left for the next run: it never
    holds back the others.
    """
    differing, _ = invoices_reconcile(live_only=True)
    failed = drafts_recompute(differing)
    if differing:
        logger.warning(
            "%d draft(s) differed from a fresh computation (a refresh was missed): %d recomputed, %d failed.",
            len(differing),
            len(differing) - failed,
            failed,
        )
    return len(differing), failed


def drafts_recompute(drafts: Sequence[Invoice]) -> int:
    """Recompute each of `drafts` (`invoice_refresh`), one failing never holding back the others (it is
    logged); returns how many failed."""
    failed = 0
    for invoice in drafts:
        try:
            invoice_refresh(invoice_id=invoice.id)
        except Exception:
            failed += 1
            logger.exception(
                "Draft %s (contract %s) differs and could not be recomputed.", invoice.id, invoice.contract_id
            )
    return failed


def _reconcile_chunk(chunk: Sequence[Invoice], drafts: list[Invoice], drifted: list[Invoice]) -> None:
    links = contract_pricing_links_many(contract_ids={invoice.contract_id for invoice in chunk})
    quantities = invoice_quantities_prefetch(
        invoices=[
            (invoice.contract, links[invoice.contract_id], invoice.period_start, invoice.period_end)
            for invoice in chunk
        ]
    )
    for invoice in chunk:
        if invoice.status not in LIVE_STATUSES:
            if (drift := invoice_drift(invoice=invoice)) is not None and drift.has_drift:
                drifted.append(invoice)
            continue
        computation = invoice_compute(
            contract=invoice.contract,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            links=links[invoice.contract_id],
            quantities=quantities,
        )
        extra = adjustment_lines(contract=invoice.contract, carrier=invoice, period_start=invoice.period_start)
        if extra:
            computation = computation_of(
                currency=computation.currency,
                lines=[*computation.lines, *extra],
                tax_rate=computation.tax_rate,
                flagged=computation.flagged,
            )
        if invoice_differs(invoice, computation):
            drafts.append(invoice)
