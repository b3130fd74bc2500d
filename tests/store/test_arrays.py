"""TextArray: on PostgreSQL the driver sends it as a binary TEXT[], and every text arrives as it
was, whatever it holds; other lists keep the driver's default."""

from __future__ import annotations

import pytest
from psycopg.adapt import PyFormat
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import text

from signserver.audit.log import canonical_detail, record_tail
from signserver.store.arrays import TextArray
from signserver.store.database import Database
from tests.conftest import ON_POSTGRESQL, database_url

pytestmark = pytest.mark.skipif(not ON_POSTGRESQL, reason="PostgreSQL's driver (SIGNSERVER_TEST_STORE)")

# What a text-format array literal must quote or escape, and what JSON and audit tails hold.
AWKWARD = ['{"a":"b, c"}', 'back\\slash', 'quote"d', "{}", "", "NULL", " spaced ", "line\nbreak",
           "澳門 Assinatura digital", "a,b", "(x)", "\N{EMOJI MODIFIER FITZPATRICK TYPE-3}"]


@pytest.fixture
def database(tmp_path):
    database = Database(database_url(tmp_path / "test.db"))
    yield database
    database.engine.dispose()


def test_every_connection_sends_text_arrays_in_binary(database):
    with database.statements() as first, database.statements() as second:
        for conn in (first, second):
            adapters = conn.connection.driver_connection.adapters
            assert adapters.get_dumper(TextArray, PyFormat.AUTO) is ListBinaryDumper
            assert adapters.get_dumper(list, PyFormat.AUTO) is not ListBinaryDumper


def test_texts_arrive_as_they_were_sent_in_order(database):
    detail = canonical_detail({"credential": "c-1", "digest": "ab" * 32, "note": 'he said "hi", \\o/'})
    values = [*AWKWARD, detail, record_tail(1_700_000_000, "signature", "app", "holder", detail)]
    with database.statements() as conn:
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute("SELECT x, pg_typeof(%s) FROM unnest(CAST(%s AS TEXT[])) WITH ORDINALITY AS u(x, n) ORDER BY n",
                       (TextArray(values), TextArray(values)))
        rows = cursor.fetchall()
    assert [row[0] for row in rows] == values
    assert {row[1] for row in rows} == {"text[]"}


def test_an_empty_array_is_an_empty_text_array(database):
    with database.statements() as conn:
        found = conn.execute(text("SELECT cardinality(CAST(:values AS TEXT[]))"), {"values": TextArray()}).scalar_one()
    assert found == 0
