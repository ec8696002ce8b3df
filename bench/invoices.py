"""Month-end invoice run on PostgreSQL, against a hand-written SQL query over the raw records in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/14 python -m bench.invoices
    ... python -m bench.invoices --customers 1000 --records 500000     # a smaller run

The data set (setup, not measured): CUSTOMERS customers, each with an active contract of three
pricings (a flat fee, a per-unit price on a `count` metric, a graduated tiered price on a `sum`
metric) since the first day of last month; RECORDS usage records from two days before last month to
two days after it, inserted straight into the records table (1% voided; 1% of the customers send
nothing); then the metrics engine's full recompute of both metrics, as production runs it when a
metric is created. The first customer and contract are made by the services, the others are copies.

1. the limit: one hand-written SQL query over the raw records computing, for every customer, the two
   metered quantities of last month, each line's amount, the tax and the total (warmed once, then
   the median of three runs; PostgreSQL's parallel workers help it as they will);
2. the product: the month-end run as production runs it, `billing.tasks.invoices_generate_due_task`
   sent once (as beat sends it) to a real Celery worker at its production defaults (DEBUG=0, as many
   processes as cores), timed from the send until every contract's draft is committed;
3. the checks: every draft reconciles (`invoices_reconcile` finds no difference), every draft has its
   `invoice.generate` audit entry, and every draft's quantities, line amounts, tax and total equal the
   SQL's, customer by customer.
ratio = SQL time / run time (target >= 0.3x). Each line prints PASS or FAIL; the exit status is 1 when
any fails. The database (BENCH_INVOICES_DB, default `bench_invoices`) is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import admin_url, step, verdict

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = os.environ.get("BENCH_INVOICES_DB", "bench_invoices")
# The server's URL as given; the process's DATABASE_URL becomes the benchmark database's below.
ADMIN_URL = admin_url()
RATIO_TARGET = 0.3
# The price list, as the pricings store it and as the hand-written query applies it.
FLAT_FEE = Decimal("49")
PER_UNIT = Decimal("0.0015")
TIER_UP_TO = Decimal("6000")
TIER_RATES = (Decimal("0.10"), Decimal("0.08"))
TIER_FLAT = (Decimal("5"), Decimal("0"))
TAX_RATES = (Decimal("0"), Decimal("8.25"), Decimal("20"))  # customer i pays TAX_RATES[i % 3]


def bench_url() -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + BENCH_DB


def env() -> dict[str, str]:
    """Production mode at its defaults, on the benchmark database."""
    environment = {
        **os.environ,
        "DATABASE_URL": bench_url().replace("postgresql://", "postgres://", 1),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "CELERY_EAGER": "0",
        "DJANGO_SETTINGS_MODULE": "zenskar_site.settings",
    }
    for name in ("INVOICES_GENERATE_SECONDS", "METRICS_SWEEP_SECONDS", "CELERY_WORKER_CONCURRENCY"):
        environment.pop(name, None)
    return environment


def month_bounds(today: dt.date) -> tuple[dt.date, dt.date]:
    """Last month: the period that closed at the start of this one."""
    end = today.replace(day=1)
    return (end - dt.timedelta(days=1)).replace(day=1), end


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(env()["REDIS_URL"]).flushdb()


def database_create() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    step(f"migrating the benchmark database {BENCH_DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True)


def django_setup() -> None:
    os.environ.update(env())
    import django

    django.setup()


def catalogue_make(start: dt.date) -> dict[str, Any]:
    """The organisation, its usage event, both metrics (no recompute yet), the three pricings, and the first
    customer with its contract, all through the services."""
    from unittest import mock

    from billing.catalogue import pricing_create, product_create
    from billing.contracts import contract_create
    from billing.customers import customer_create
    from metrics.definitions import metric_create
    from usage.services import usage_event_create
    from zenskar_site.accounts.actors import system_actor
    from zenskar_site.accounts.services import organisation_create

    organisation, _ = organisation_create(name="Bench", admin_email="bench@example.com", password="bench-password")
    actor = system_actor(organisation=organisation)
    event = usage_event_create(
        actor=actor, name="Compute", api_slug="compute", dataschema={"data": {"cpu_usage_hours": "Float64"}}
    )
    # Recomputed below, after the records are in, with progress (not by a task queued now).
    with mock.patch("metrics.definitions._recompute_after_commit"):
        calls = metric_create(
            actor=actor,
            body={"name": "Calls", "slug": "calls", "usage_event": "compute", "aggregation": "count"},
        )
        cpu = metric_create(
            actor=actor,
            body={
                "name": "CPU hours",
                "slug": "cpu_hours",
                "usage_event": "compute",
                "aggregation": "sum",
                "field": "cpu_usage_hours",
            },
        )
    pricings = []
    for name, product_type, data in (
        ("Platform", "fixed", {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": str(FLAT_FEE)}}),
        (
            "API calls",
            "metered",
            {
                "pricing_data": {"pricing_type": "per_unit", "unit_amount": str(PER_UNIT)},
                "quantity": {"type": "metered", "aggregate_id": "calls", "unit": "call"},
            },
        ),
        (
            "Compute",
            "metered",
            {
                "pricing_data": {
                    "pricing_type": "tiered",
                    "unit_amount": [str(rate) for rate in TIER_RATES],
                    "up_to": [int(TIER_UP_TO), None],
                    "flat_amount": [str(flat) for flat in TIER_FLAT],
                },
                "quantity": {"type": "metered", "aggregate_id": "cpu_hours", "unit": "CPU hour"},
            },
        ),
    ):
        product = product_create(actor=actor, data={"name": name, "type": product_type})
        pricings.append(pricing_create(actor=actor, product_id=product.id, data={"name": name, **data}))
    customer = customer_create(
        actor=actor, data={"customer_name": "Customer 0", "external_id": "cus_0", "tax_rate": str(TAX_RATES[0])}
    )
    contract = contract_create(
        actor=actor,
        data={
            "name": "Main",
            "currency": "USD",
            "customer_id": str(customer.id),
            "status": "active",
            "start_date": start.isoformat(),
            "phases": [{"name": "Main", "pricings": [{"pricing_id": str(p.id)} for p in pricings]}],
        },
    )
    return {"organisation": organisation, "event": event, "metrics": (calls, cpu), "contract": contract}


def contracts_copy(contract: Any, customers: int) -> None:
    """Customers 1..n-1 and their contracts: copies of the first, field for field, with their own ids."""
    import uuid

    from django.db.models import Model

    from billing.models import Contract, ContractPhase, Customer, PhasePricing

    def copy(row: Model, **changes: Any) -> Any:
        values = {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}
        return type(row)(**(values | {"id": uuid.uuid4()} | changes))

    customer = Customer.objects.get(id=contract.customer_id)
    phases = list(ContractPhase.objects.filter(contract=contract))
    links = list(PhasePricing.objects.filter(phase__in=phases))
    chunk = 2000
    for low in range(1, customers, chunk):
        new_customers: list[Any] = []
        new_contracts: list[Any] = []
        new_phases: list[Any] = []
        new_links: list[Any] = []
        for i in range(low, min(low + chunk, customers)):
            new_customers.append(
                copy(
                    customer,
                    external_id=f"cus_{i}",
                    customer_name=f"Customer {i}",
                    tax_rate=TAX_RATES[i % len(TAX_RATES)],
                )
            )
            new_contracts.append(copy(contract, customer_id=new_customers[-1].id))
            for phase in phases:
                new_phases.append(copy(phase, contract_id=new_contracts[-1].id))
                new_links.extend(copy(link, phase_id=new_phases[-1].id) for link in links if link.phase_id == phase.id)
        Customer.objects.bulk_create(new_customers)
        Contract.objects.bulk_create(new_contracts)
        ContractPhase.objects.bulk_create(new_phases)
        PhasePricing.objects.bulk_create(new_links)
        print(f"\r[bench] contracts: {min(low + chunk, customers):,}/{customers:,}", end="", flush=True)
    print()


def records_load(event_id: int, *, records: int, customers: int, month: tuple[dt.date, dt.date]) -> None:
    """`records` rows from two days before the month to two days after it, generated by the database
    (the data set, not a measurement): customer i % active, cpu (i % 97) / 4, every 100th voided."""
    start = dt.datetime.combine(month[0] - dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(month[1] + dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC)
    active = customers - customers // 100  # the last 1% send nothing: their drafts bill the flat fee only
    chunk = 500_000
    with psycopg.connect(bench_url()) as conn:
        # The table's indexes are built once after the load (much faster than 5 million index inserts).
        indexes = [
            (name, definition)
            for name, definition in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_usagerecord' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            ).fetchall()
        ]
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        for low in range(0, records, chunk):
            high = min(low + chunk, records)
            conn.execute(
                """
                INSERT INTO usage_usagerecord
                    (usage_event_id, customer_id, "timestamp", data, content_hash, received_at, voided, superseded)
                SELECT %(event)s, 'cus_' || (i %% %(active)s),
                       %(start)s + (%(end)s - %(start)s) * (i::float8 / %(records)s),
                       jsonb_build_object('cpu_usage_hours', (i %% 97) / 4.0),
                       repeat('0', 64), now(), i %% 100 = 99, false
                FROM generate_series(%(low)s, %(high)s - 1) AS i
                """,
                {"event": event_id, "active": active, "start": start, "end": end, "records": records}
                | {"low": low, "high": high},
            )
            conn.commit()
            print(f"\r[bench] records: {high:,}/{records:,}", end="", flush=True)
        print()
        for number, (_, definition) in enumerate(indexes, start=1):
            print(f"\r[bench] indexing the records: {number}/{len(indexes)}", end="", flush=True)
            conn.execute(definition)
            conn.commit()
        print()
    with psycopg.connect(bench_url(), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE usage_usagerecord")


def metrics_recompute(metrics: tuple[Any, ...]) -> None:
    """The engine's full recompute of each metric over the loaded history (what a metric's creation runs)."""
    from metrics.engine.refresh import metric_recompute
    from metrics.models import MetricValue

    for metric in metrics:
        started = time.perf_counter()

        def show(done: int, total: int, slug: str = metric.slug) -> None:
            print(f"\r[bench] recomputing {slug}: month {done}/{total}", end="", flush=True)

        metric_recompute(metric_id=metric.id, version=metric.version, progress=show)
        print()
        step(
            f"{metric.slug}: {MetricValue.objects.filter(metric=metric).count():,} values stored "
            f"in {time.perf_counter() - started:.1f}s"
        )
    with psycopg.connect(bench_url(), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# For each customer with a billed contract: last month's two quantities from the raw records (a record
# names its customer by external id or by id), each line's amount rounded half-up to the cent, the tax
# and the total, as the contract's three pricings charge them.
HAND_WRITTEN_SQL = """
WITH customer_keys AS (
    SELECT id AS customer_id, external_id AS key FROM billing_customer
    WHERE organisation_id = %(organisation)s AND external_id IS NOT NULL
    UNION ALL
    SELECT id, id::text FROM billing_customer WHERE organisation_id = %(organisation)s
), usage AS (
    SELECT k.customer_id, count(*) AS calls, sum(CAST(r.data->>'cpu_usage_hours' AS NUMERIC)) AS cpu
    FROM usage_usagerecord r JOIN customer_keys k ON k.key = r.customer_id
    WHERE r.usage_event_id = %(event)s AND NOT r.voided AND NOT r.superseded
      AND r."timestamp" >= %(start)s AND r."timestamp" < %(end)s
    GROUP BY k.customer_id
), lines AS (
    SELECT c.id AS customer_id, c.tax_rate, coalesce(u.calls, 0) AS calls, coalesce(u.cpu, 0) AS cpu,
           round(%(flat)s::numeric, 2) AS flat_amount,
           round(coalesce(u.calls, 0) * %(per_unit)s::numeric, 2) AS calls_amount,
           round(least(coalesce(u.cpu, 0), %(up_to)s::numeric) * %(rate_1)s::numeric + %(flat_1)s::numeric
                 + CASE WHEN coalesce(u.cpu, 0) > %(up_to)s::numeric
                        THEN (coalesce(u.cpu, 0) - %(up_to)s::numeric) * %(rate_2)s::numeric + %(flat_2)s::numeric
                        ELSE 0 END, 2) AS cpu_amount
    FROM billing_contract ct
    JOIN billing_customer c ON c.id = ct.customer_id
    LEFT JOIN usage u ON u.customer_id = c.id
    WHERE ct.organisation_id = %(organisation)s AND ct.status IN ('active', 'paused', 'expired')
      AND ct.start_date < %(end_date)s
)
SELECT customer_id::text, calls, cpu, flat_amount, calls_amount, cpu_amount,
       flat_amount + calls_amount + cpu_amount AS subtotal,
       round((flat_amount + calls_amount + cpu_amount) * tax_rate / 100, 2) AS tax
FROM lines
"""


def hand_written(params: dict[str, Any]) -> tuple[float, dict[str, tuple[Decimal, ...]]]:
    """The median time of three runs (after one to warm the cache) and the per-customer results."""
    times: list[float] = []
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(bench_url()) as conn:
        conn.execute(HAND_WRITTEN_SQL, params).fetchall()
        for _ in range(3):
            started = time.perf_counter()
            rows = conn.execute(HAND_WRITTEN_SQL, params).fetchall()
            times.append(time.perf_counter() - started)
    step("hand-written SQL: " + ", ".join(f"{t:.2f}s" for t in times) + f" for {len(rows):,} customers")
    return statistics.median(times), {row[0]: tuple(Decimal(value) for value in row[1:]) for row in rows}


def drafts_forget() -> dict[str, Any]:
    """--reuse: the kept data set, its drafts deleted (their audit entries stay: the trail is append-only)
    and their tables vacuumed, as a fresh run finds them (the server may not vacuum by itself)."""
    from billing.invoicing.models import Invoice, InvoiceLine
    from usage.models import UsageEvent
    from zenskar_site.accounts.models import Organisation

    InvoiceLine.objects.all().delete()
    Invoice.objects.all().delete()
    with psycopg.connect(bench_url(), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {InvoiceLine._meta.db_table}, {Invoice._meta.db_table}")
    organisation = Organisation.objects.get(name="Bench")
    return {"organisation": organisation, "event": UsageEvent.objects.get(organisation=organisation)}


def month_end_run(expected: int, *, timeout: float) -> float:
    """Start a worker as production does, send the beat task once, and time until `expected` drafts exist."""
    from billing.tasks import invoices_generate_due_task
    from zenskar_site.celery import app

    redis_flush()  # the setup's after-commit tasks (draft refreshes of no draft) must not run meanwhile
    log = open(f"/tmp/bench-invoices-worker-{os.getpid()}.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "zenskar_site", "worker", "--loglevel", "WARNING"],
        cwd=ROOT,
        env=env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start (see {log.name})")
        step(f"month-end run: {expected:,} drafts expected; the beat task sent to the worker")
        started = time.perf_counter()
        invoices_generate_due_task.delay()
        shown = time.monotonic()
        with psycopg.connect(bench_url(), autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT count(*) FROM billing_invoice").fetchone()
                made = int(row[0]) if row else 0
                if made >= expected:
                    elapsed = time.perf_counter() - started
                    break
                if time.perf_counter() - started > timeout or worker.poll() is not None:
                    raise RuntimeError(f"only {made:,} of {expected:,} drafts after {timeout:.0f}s (see {log.name})")
                if time.monotonic() - shown >= 2:
                    print(f"\r[bench] drafts: {made:,}/{expected:,}", end="", flush=True)
                    shown = time.monotonic()
                time.sleep(0.02)
        print(f"\r[bench] drafts: {expected:,}/{expected:,}")
        # The chain's last task finds nothing more; a warm shutdown lets it finish.
        time.sleep(1)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    return elapsed


def checks(organisation: Any, expected: dict[str, tuple[Decimal, ...]]) -> list[tuple[str, bool]]:
    """Reconcile every draft, find their audit entries, and compare each draft with the SQL's figures."""
    from billing.invoicing.models import Invoice, InvoiceLine
    from billing.invoicing.services import invoices_reconcile
    from zenskar_site.accounts.models import AuditEntry

    started = time.perf_counter()
    drafts, drifted = invoices_reconcile(organisation_ids=[organisation.id])
    elapsed = time.perf_counter() - started
    step(f"invoices_reconcile: {len(drafts)} draft(s) differ, {len(drifted)} drifted, in {elapsed:.1f}s")
    invoices = {
        str(invoice.customer_id): invoice
        for invoice in Invoice.objects.filter(organisation=organisation).exclude(status="discarded")
    }
    audited = set(
        AuditEntry.objects.filter(organisation=organisation, action="invoice.generate").values_list(
            "object_id", flat=True
        )
    )
    lines: dict[Any, dict[str, InvoiceLine]] = {}
    for line in InvoiceLine.objects.filter(invoice__organisation=organisation).select_related("product"):
        assert line.product is not None
        lines.setdefault(line.invoice_id, {})[line.product.name] = line
    wrong: list[str] = []
    for customer_id, figures in expected.items():
        calls, cpu, flat_amount, calls_amount, cpu_amount, subtotal, tax = figures
        invoice = invoices.get(customer_id)
        if invoice is None:
            wrong.append(f"{customer_id}: no draft")
            continue
        found = lines.get(invoice.id, {})
        got = (
            Decimal(found["API calls"].quantity) if "API calls" in found else None,
            Decimal(found["Compute"].quantity) if "Compute" in found else None,
            found["Platform"].amount if "Platform" in found else None,
            found["API calls"].amount if "API calls" in found else None,
            found["Compute"].amount if "Compute" in found else None,
            invoice.subtotal,
            invoice.tax,
            invoice.total,
        )
        want = (calls, cpu, flat_amount, calls_amount, cpu_amount, subtotal, tax, subtotal + tax)
        if got != want or len(found) != 3:
            wrong.append(f"{customer_id}: draft {got} != SQL {want}")
    for text in wrong[:5]:
        step(f"mismatch: {text}")
    sample = next(iter(expected.items()), None)
    if sample is not None:
        step(f"e.g. customer {sample[0]}: SQL (calls, cpu, flat, calls, cpu, subtotal, tax) = {sample[1]}")
    return [
        (
            f"every draft reconciles: {len(invoices):,} drafts, {len(drafts)} differ from a fresh computation",
            not drafts and not drifted and len(invoices) == len(expected),
        ),
        (
            f"every draft audited: {len(audited & {str(i.id) for i in invoices.values()}):,} invoice.generate entries",
            {str(i.id) for i in invoices.values()} <= audited,
        ),
        (
            f"every draft equals the hand-written SQL (quantities, lines, tax, total): {len(wrong)} differ",
            not wrong and len(expected) == len(invoices),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=int(os.environ.get("BENCH_CUSTOMERS", "10000")))
    parser.add_argument("--records", type=int, default=int(os.environ.get("BENCH_RECORDS", "5000000")))
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="skip the setup: measure again on a database kept by --keep"
    )
    args = parser.parse_args()
    today = dt.datetime.now(dt.UTC).date()
    month = month_bounds(today)
    step(f"{args.customers:,} customers, {args.records:,} records; billing {month[0]} to {month[1]} (exclusive)")
    redis_flush()
    if args.reuse:
        django_setup()
        made = drafts_forget()
    else:
        database_create()
        django_setup()
        made = catalogue_make(month[0])
        contracts_copy(made["contract"], args.customers)
        records_load(made["event"].id, records=args.records, customers=args.customers, month=month)
        metrics_recompute(made["metrics"])
    params = {
        "organisation": made["organisation"].id,
        "event": made["event"].id,
        "start": dt.datetime.combine(month[0], dt.time(), tzinfo=dt.UTC),
        "end": dt.datetime.combine(month[1], dt.time(), tzinfo=dt.UTC),
        "end_date": today,
        "flat": FLAT_FEE,
        "per_unit": PER_UNIT,
        "up_to": TIER_UP_TO,
        "rate_1": TIER_RATES[0],
        "rate_2": TIER_RATES[1],
        "flat_1": TIER_FLAT[0],
        "flat_2": TIER_FLAT[1],
    }
    limit, expected = hand_written(params)
    run = month_end_run(len(expected), timeout=max(600.0, 60 * limit))
    lines = checks(made["organisation"], expected)
    ratio = limit / run
    print()
    print(f"customers: {args.customers:,}   records: {args.records:,}   cores: {os.cpu_count()}")
    print(f"hand-written SQL (limit)   {limit:8.2f}s  {len(expected) / limit:10,.0f} customers/s")
    print(f"month-end run (worker)     {run:8.2f}s  {len(expected) / run:10,.0f} drafts/s")
    lines.insert(0, (f"ratio run / SQL      {ratio:6.2f}x   (target >= {RATIO_TARGET:.2f}x)", ratio >= RATIO_TARGET))
    for text, ok in lines:
        print(f"{verdict(ok)}  {text}")
    from django.db import connections

    connections.close_all()
    if not args.keep:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    redis_flush()
    return 0 if all(ok for _, ok in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
