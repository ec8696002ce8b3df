"""Ingestion against a real PostgreSQL behind a real gunicorn: concurrency and outages."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.processes import gunicorn_server, http_post, private_postgres, private_postgres_run
from usage.models import UsageRecord

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _record(key: str, customer: str = "cus_1") -> bytes:
    moment = (timezone.now() - dt.timedelta(minutes=1)).replace(microsecond=0)
    return json.dumps(
        {
            "customer_id": customer,
            "timestamp": moment.isoformat(),
            "data": {"cpu_usage_hours": 1.5},
            "idempotency_key": key,
        }
    ).encode()


def test_twenty_concurrent_requests_with_one_idempotency_key_store_exactly_one_record() -> None:
    organisation = organisation_make(name="Concurrent")
    usage_event_make(organisation=organisation)
    secret = api_key_make(organisation=organisation, scope="ingest").secret
    body = _record("same-key")
    headers = {"x-api-key": secret, "Content-Type": "application/json"}
    barrier = threading.Barrier(20)
    outcomes: list[tuple[int, dict]] = []
    lock = threading.Lock()

    with gunicorn_server(workers=2, threads=10) as url:

        def send() -> None:
            barrier.wait()
            status, raw = http_post(f"{url}/usage/compute_hours", body, headers)
            with lock:
                outcomes.append((status, json.loads(raw)))

        threads = [threading.Thread(target=send) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert len(outcomes) == 20
    assert all(status == 202 for status, _ in outcomes), outcomes
    statuses = [body["results"][0]["status"] for _, body in outcomes]
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 19
    stored = UsageRecord.objects.get()
    assert {body["results"][0]["id"] for _, body in outcomes} == {stored.id}


def test_concurrent_batches_with_overlapping_keys_in_random_orders_never_deadlock() -> None:
    organisation = organisation_make(name="Overlapping")
    usage_event_make(organisation=organisation)
    secret = api_key_make(organisation=organisation, scope="ingest").secret
    headers = {"x-api-key": secret, "Content-Type": "application/json"}
    moment = (timezone.now() - dt.timedelta(minutes=1)).replace(microsecond=0).isoformat()
    rng = random.Random(20261130)
    clients, rounds = 8, 4

    def batch(keys: list[str]) -> bytes:  # the same content for a key in every batch: a resent record is a duplicate
        return json.dumps(
            [
                {"customer_id": k, "timestamp": moment, "data": {"cpu_usage_hours": 1}, "idempotency_key": k}
                for k in keys
            ]
        ).encode()

    # In each round every client sends the same new keys at the same moment, each in its own random order.
    round_keys = [[f"r{r}-k{i:04d}" for i in range(1000)] for r in range(rounds)]
    plans = [[batch(rng.sample(keys, len(keys))) for keys in round_keys] for _ in range(clients)]
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    lock = threading.Lock()

    with gunicorn_server(workers=2, threads=clients // 2) as url:

        def client(bodies: list[bytes]) -> None:
            for body in bodies:
                barrier.wait()
                status, _ = http_post(f"{url}/usage/compute_hours", body, headers)
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=client, args=(bodies,)) for bodies in plans]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert statuses == [202] * (clients * rounds), statuses  # a deadlock is a 503
    stored = list(UsageRecord.objects.values_list("idempotency_key", flat=True))
    assert sorted(stored) == sorted(key for keys in round_keys for key in keys)  # every key once


SETUP = """
from tests.factories import api_key_make, organisation_make, usage_event_make
organisation = organisation_make(name="Outage")
usage_event_make(organisation=organisation)
print(api_key_make(organisation=organisation).secret)
"""


def test_with_postgres_stopped_the_endpoint_answers_503_loses_nothing_and_heals_at_once() -> None:
    """On a private cluster (this test stops and starts it): 503s while it is down, and every request
    after it is back answers 2xx, the first one on each worker and on each route included."""
    with private_postgres() as server:
        secret = private_postgres_run(server, SETUP).strip().splitlines()[-1]
        headers = {"x-api-key": secret, "Content-Type": "application/json"}
        answered: dict[str, int] = {}

        with gunicorn_server(workers=2, threads=1, DATABASE_URL=server.url) as url:
            n = 0

            def send_one() -> int:
                nonlocal n
                n += 1
                key = f"k-{n}"
                body = _record(key, customer=f"c{n % 3}")
                status, _ = http_post(f"{url}/usage/compute_hours", body, headers, timeout=30)
                answered[key] = status
                return status

            def api_get() -> int:
                request = urllib.request.Request(f"{url}/api/v1/metrics/", headers={"x-api-key": secret})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return int(response.status)
                except urllib.error.HTTPError as exc:
                    return int(exc.code)

            # Both workers hold a connection
            before = [send_one() for _ in range(10)] + [api_get() for _ in range(4)]
            server.stop()
            try:
                during = [send_one() for _ in range(5)]
            finally:
                server.start()
            after = [send_one() for _ in range(10)]
            # A restart with no request meanwhile: each worker's connection is one the server dropped
            server.stop()
            server.start()
            after_quiet_restart = [send_one() for _ in range(6)]
            server.stop()
            server.start()
            api_after_quiet_restart = [api_get() for _ in range(4)]
            # A client retries what did not get a 2xx; the retry must store each record once.
            retried = {
                key: http_post(f"{url}/usage/compute_hours", _record(key, customer=f"c{int(key[2:]) % 3}"), headers)[0]
                for key, status in answered.items()
                if status != 202
            }

        with psycopg.connect(server.url.replace("postgres://", "postgresql://")) as database:
            stored_keys = [row[0] for row in database.execute("SELECT idempotency_key FROM usage_usagerecord")]

    assert before == [202] * 10 + [200] * 4, before
    assert set(during) == {503}, during
    assert after == [202] * 10, after
    assert after_quiet_restart == [202] * 6, after_quiet_restart
    assert api_after_quiet_restart == [200] * 4, api_after_quiet_restart
    acknowledged = {key for key, status in answered.items() if status == 202}
    assert acknowledged <= set(stored_keys)
    assert len(stored_keys) == len(set(stored_keys))
    assert all(status == 202 for status in retried.values()), retried
    assert set(stored_keys) == set(answered)


def test_a_cached_key_revoked_or_event_archived_is_refused_at_once() -> None:
    from usage.services import usage_event_archive, usage_event_update
    from zenskar_site.accounts.actors import system_actor
    from zenskar_site.accounts.services import api_key_revoke

    organisation = organisation_make(name="Cache")
    usage_event_make(organisation=organisation)
    bundle = api_key_make(organisation=organisation, scope="ingest")
    other = api_key_make(organisation=organisation, scope="ingest")
    headers = {"x-api-key": bundle.secret, "Content-Type": "application/json"}
    actor = system_actor(organisation=organisation)

    with gunicorn_server(workers=1, threads=1) as url:
        target = f"{url}/usage/compute_hours"
        assert [http_post(target, _record(f"w{i}"), headers)[0] for i in range(3)] == [202, 202, 202]
        usage_event_update(
            actor=actor,
            api_slug="compute_hours",
            changes={
                "dataschema": {
                    "data": {"cpu_usage_hours": "Float64", "region": "Nullable(String)", "zone": "Nullable(String)"}
                }
            },
        )
        body = json.loads(_record("z1"))
        body["data"]["zone"] = "a"
        assert http_post(target, json.dumps(body).encode(), headers)[0] == 202  # the new field is known at once
        api_key_revoke(actor=actor, prefix=bundle.api_key.prefix)
        assert http_post(target, _record("after-revoke"), headers)[0] == 401
        other_headers = {"x-api-key": other.secret, "Content-Type": "application/json"}
        assert http_post(target, _record("o1"), other_headers)[0] == 202
        usage_event_archive(actor=actor, api_slug="compute_hours")
        assert http_post(target, _record("after-archive"), other_headers)[0] == 404

    keys = set(UsageRecord.objects.values_list("idempotency_key", flat=True))
    assert keys == {"w0", "w1", "w2", "z1", "o1"}


def test_the_prepared_ingestion_statement_survives_being_deallocated(client_for: Any) -> None:
    """psycopg runs DEALLOCATE ALL after a rollback on a connection; the next request prepares again."""
    organisation = organisation_make(name="Deallocated")
    usage_event_make(organisation=organisation)
    client = client_for(api_key_make(organisation=organisation, scope="ingest").secret)

    def send(key: str) -> int:
        return client.post("/usage/compute_hours", data=_record(key), content_type="application/json").status_code

    assert connection.get_autocommit()  # a transactional test: the endpoint's prepared path is taken
    assert send("before") == 202
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO usage_usagerecord%%'"
        )
        assert cursor.fetchone()[0] == 1
        cursor.execute("DEALLOCATE ALL")
    assert send("after") == 202
    assert send("after") == 202  # a retry of the same record is still a duplicate, not a second row
    assert sorted(UsageRecord.objects.values_list("idempotency_key", flat=True)) == ["after", "before"]
