"""Invoice, credit note and payment routes of the management API, included under /api/v1/ by billing.urls."""

from django.urls import path

from billing.invoicing import api

INVOICE = "invoices/<str:invoice_id>/"

api_urls = [
    path("invoices/", api.InvoiceListApi.as_view(), name="invoice-list"),
    # Before the id pattern, which would take `generate` as an id.
    path("invoices/generate/", api.InvoiceGenerateApi.as_view(), name="invoice-generate"),
    path("invoices/upcoming/", api.UpcomingInvoiceListApi.as_view(), name="invoice-upcoming-list"),
    path(INVOICE, api.InvoiceDetailApi.as_view(), name="invoice-detail"),
    path(
        "contracts/<str:contract_id>/upcoming-invoice/",
        api.ContractUpcomingInvoiceApi.as_view(),
        name="contract-upcoming-invoice",
    ),
    path(INVOICE + "approve/", api.InvoiceApproveApi.as_view(), name="invoice-approve"),
    path(INVOICE + "void/", api.InvoiceVoidApi.as_view(), name="invoice-void"),
    path(INVOICE + "discard/", api.InvoiceDiscardApi.as_view(), name="invoice-discard"),
    path(INVOICE + "credit-notes/", api.InvoiceCreditNoteListApi.as_view(), name="invoice-credit-notes"),
    path(INVOICE + "pdf/", api.InvoicePdfApi.as_view(), name="invoice-pdf"),
    path("credit-notes/", api.CreditNoteListApi.as_view(), name="credit-note-list"),
    path("credit-notes/<str:credit_note_id>/", api.CreditNoteDetailApi.as_view(), name="credit-note-detail"),
    path("credit-notes/<str:credit_note_id>/pdf/", api.CreditNotePdfApi.as_view(), name="credit-note-pdf"),
    path("payments/", api.PaymentListApi.as_view(), name="payment-list"),
    path("payments/<str:payment_id>/", api.PaymentDetailApi.as_view(), name="payment-detail"),
]
