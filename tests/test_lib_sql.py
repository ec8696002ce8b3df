"""zenskar_site.lib.sql.rows_insert (PostgreSQL): many rows in one statement of arrays, in the caller's
transaction, refused where Django's own insert would be."""

from __future__ import annotations

import uuid

import pytest
from django.db import DataError, transaction
from django.utils import timezone

from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.sql import rows_insert

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
COLUMNS = ("id", "name", "created_at")


def test_rows_insert_writes_every_row_and_returns_what_returning_gives() -> None:
    rows = [(uuid.uuid4(), f"Org {i}", timezone.now()) for i in range(3)]

    returned = rows_insert(Organisation, columns=COLUMNS, rows=rows, then="RETURNING id")

    assert sorted(returned) == sorted((row[0],) for row in rows)
    assert sorted(Organisation.objects.values_list("id", "name")) == sorted((row[0], row[1]) for row in rows)


@transaction.atomic
def _insert_then_fail() -> None:
    rows_insert(Organisation, columns=COLUMNS, rows=[(uuid.uuid4(), "Gone", timezone.now())])
    raise RuntimeError("rolled back")


@pytest.mark.django_db(transaction=True)  # a real transaction, which nothing has begun before the insert
def test_rows_insert_as_a_transactions_first_statement_is_rolled_back_with_it() -> None:
    # psycopg begins Django's transaction at its first statement: the insert must be inside it.
    with pytest.raises(RuntimeError):
        _insert_then_fail()

    assert not Organisation.objects.filter(name="Gone").exists()


def test_rows_insert_refuses_a_text_too_long_instead_of_cutting_it() -> None:
    with pytest.raises(DataError), transaction.atomic():
        rows_insert(Organisation, columns=COLUMNS, rows=[(uuid.uuid4(), "x" * 201, timezone.now())])

    assert not Organisation.objects.exists()


def test_rows_insert_skips_conflicts_when_told_and_says_which_rows_it_wrote() -> None:
    rows_insert(Organisation, columns=COLUMNS, rows=[(uuid.uuid4(), "Taken", timezone.now())])
    again = [(uuid.uuid4(), "Taken", timezone.now()), (uuid.uuid4(), "Free", timezone.now())]

    returned = rows_insert(Organisation, columns=COLUMNS, rows=again, then="ON CONFLICT DO NOTHING RETURNING id")

    assert returned == [(again[1][0],)]
    assert Organisation.objects.count() == 2
