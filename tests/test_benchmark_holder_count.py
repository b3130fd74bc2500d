"""The holder-count benchmark's database work: copies of holders, and a copy of the database.

What the benchmark times is never asserted; what it builds its figures on is.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from benchmarks.holder_count import copy_holders, holder_count, snapshot_sqlite
from signserver.store.database import Database
from signserver.store.schema import account_emails, accounts, credentials, signing_packages
from tests.conftest import enrol


def test_copied_holders_are_new_accounts_each_with_its_own_credential_and_package(fresh_service):
    templates = [enrol(fresh_service, f"template-{n}")[0] for n in range(2)]
    before = holder_count(fresh_service.database)

    copy_holders(fresh_service.database, [t.account.username for t in templates], 5, "copy")

    assert holder_count(fresh_service.database) == before + 5
    with fresh_service.database.read() as conn:
        copies = conn.execute(select(accounts.c.id, accounts.c.username).where(accounts.c.username.like("copy-%"))
                              .order_by(accounts.c.username)).all()
        copy_ids = [row.id for row in copies]
        copied_credentials = conn.execute(select(credentials).where(credentials.c.account_id.in_(copy_ids))).all()
        packages = {row.key_id: row for row in conn.execute(select(signing_packages).where(
            signing_packages.c.key_id.in_([c.key_id for c in copied_credentials])))}
        addresses = conn.execute(select(account_emails.c.address)
                                 .where(account_emails.c.account_id.in_(copy_ids))).scalars().all()
        template_keys = {row.key_id for row in conn.execute(select(credentials.c.key_id).where(
            credentials.c.id.in_([t.credential.id for t in templates])))}
        template_publics = set(conn.execute(select(signing_packages.c.public_key)
                                            .where(signing_packages.c.key_id.in_(template_keys))).scalars())
    assert [row.username for row in copies] == [f"copy-{n:06d}" for n in range(5)]
    assert sorted(c.account_id for c in copied_credentials) == sorted(copy_ids)  # one credential each
    assert all(c.key_store == "package" for c in copied_credentials)
    assert set(packages) == {c.key_id for c in copied_credentials}  # each credential has its own package
    assert not set(packages) & template_keys
    assert len(set(addresses)) == len(addresses) == 5
    # Each copy carries a template's holder key, under a new name: both templates are copied.
    assert {p.public_key for p in packages.values()} == template_publics


@pytest.mark.sqlite_only  # a snapshot is a copy of the SQLite file
def test_a_snapshot_keeps_the_holders_of_its_moment(fresh_service, tmp_path):
    enrol(fresh_service, "before-snapshot")
    url = snapshot_sqlite(fresh_service.config.database_url, tmp_path / "snapshot.db")
    enrol(fresh_service, "after-snapshot")
    assert (tmp_path / "snapshot.db").stat().st_mode & 0o077 == 0  # it holds sealed secrets

    snapshot = Database(url)
    try:
        with snapshot.read() as conn:
            names = set(conn.execute(select(accounts.c.username)).scalars())
    finally:
        snapshot.dispose()
    assert "before-snapshot" in names and "after-snapshot" not in names
