"""A key handle the process keeps goes stale when another session destroys the key (another
process's `hsm master retire`, say): the session is opened again and the key looked up again, and
the log says what happened, an expected event, not a lost session."""

from __future__ import annotations

import hashlib
import logging

import pkcs11
import pytest

from signserver.errors import KeyNotFound
from signserver.hsm.module import load_module, pkcs11_lock
from signserver.hsm.session import find_token
from tests.hsm.test_fork_and_recovery import SCHEMES, sign_and_check

pytestmark = pytest.mark.one_store  # touches no store


@pytest.fixture
def key(keystore, label, token_key_algorithm):
    return keystore.generate(token_key_algorithm, label)


def destroy_in_another_session(config, key) -> None:
    with pkcs11_lock():
        token = find_token(load_module(config.hsm.module), config.hsm.token_label, config.hsm.module)
        with token.open(rw=True) as other:
            for obj in list(other.get_objects({pkcs11.Attribute.ID: bytes.fromhex(key.key_id)})):
                obj.destroy()


def test_a_key_destroyed_by_another_session_is_logged_as_a_stale_handle(keystore, key, config, caplog):
    sign_and_check(keystore, key, b"handle now cached")
    destroy_in_another_session(config, key)

    with caplog.at_level(logging.DEBUG, logger="signserver.hsm.session"):
        with pytest.raises(KeyNotFound):
            keystore.sign_digest(key.key_id, hashlib.sha256(b"after").digest(), SCHEMES[key.algorithm])

    records = [r for r in caplog.records if r.name == "signserver.hsm.session"]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    message = record.getMessage()
    assert "session lost" not in message
    assert "handle" in message and "no longer valid" in message and "another process" in message
    assert "looked up again" in message
    assert record.levelno == logging.INFO
