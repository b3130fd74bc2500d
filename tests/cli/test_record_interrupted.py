"""A Ctrl-C while a command writes the audit record of what the token did is acted on once the
record is written: the record is whole, and the database's connection is not left mid-command."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

from signserver.cli.token_records import TRANSPORT_KEY_GENERATED, record
from signserver.store.schema import audit_log


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raising KeyboardInterrupt, as in a command run at a terminal, whatever the test
    process was given: a job run in the background starts with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_during_the_record_comes_after_it(fresh_service, capsys, monkeypatch, ctrl_c_raises):
    append = fresh_service.audit.append
    interrupted = []

    def ctrl_c_then_append(conn, *args, **kwargs):
        interrupted.append(True)
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, inside the record's transaction
        return append(conn, *args, **kwargs)

    monkeypatch.setattr(fresh_service.audit, "append", ctrl_c_then_append)
    with pytest.raises(KeyboardInterrupt):
        record(fresh_service, TRANSPORT_KEY_GENERATED, "signserver-transport-9",
               "the transport key pair signserver-transport-9 was generated", sha256="ab" * 32)
    assert interrupted
    with fresh_service.database.read() as conn:
        subjects = conn.execute(select(audit_log.c.subject).where(audit_log.c.event == TRANSPORT_KEY_GENERATED)
                                ).scalars().all()
    assert subjects == ["signserver-transport-9"]
    said = capsys.readouterr().err
    assert "the audit record of what the token did is written first" in said and "WARNING" not in said
