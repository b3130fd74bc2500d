"""A key handle the process keeps goes stale when another session destroys the key (another
process's `hsm master retire`, say): the session is opened again and the key looked up again, and
the log says what happened, an expected event, not a lost session."""

from __future__ import annotations

import hashlib
import logging
import signal
import subprocess
import sys

import pkcs11
import pytest

from signserver.errors import KeyNotFound
from signserver.hsm.module import load_module, pkcs11_lock
from signserver.hsm.session import find_token
from tests.conftest import cli_env, requires_softhsm
from tests.hsm.test_fork_and_recovery import SCHEMES, sign_and_check
from tests.hsm.test_new_objects import stop

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


# Another program making and destroying keys on the token without pause (raw python-pkcs11: no
# signserver lock), so that a search finds some of them destroyed before it reads them.
MAKER = """
import os, signal, sys
import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=sys.argv[3]) as session:
    stopping = []
    signal.signal(signal.SIGUSR1, lambda *_: stopping.append(True))
    print("making", flush=True)
    while not stopping:
        session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                               Attribute.VALUE: os.urandom(32), Attribute.TOKEN: True,
                               Attribute.LABEL: "short-lived"}).destroy()
"""

# A signserver process that only searches (SoftHSM may hide other processes' new objects from a
# process that has written to the token itself), until three searches met a destroyed key.
SEARCHER = """
import logging, time
from pkcs11 import Attribute, ObjectClass
from signserver.config import load_config
from signserver.hsm.session import TokenSession

logging.basicConfig(level=logging.INFO)
config = load_config()
session = TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin())
asked, deadline = 0, time.monotonic() + 120  # a bound for a machine where they never meet
while session.searches - asked < 3 and time.monotonic() < deadline:
    session.run(lambda s: session.find(s, {Attribute.CLASS: ObjectClass.SECRET_KEY}), "search")
    asked += 1
print(asked, session.searches - asked, flush=True)
"""


@requires_softhsm("another process on the soft token (openCryptoki's is one per system, behind its daemon)")
def test_a_search_that_meets_a_key_destroyed_meanwhile_searches_again_without_logging_in_again(config, state_dir):
    maker = subprocess.Popen([sys.executable, "-c", MAKER, str(config.hsm.module), config.hsm.token_label,
                              config.hsm.user_pin().reveal()], stdout=subprocess.PIPE, text=True,
                             env=cli_env(state_dir))
    try:
        assert maker.stdout.readline() == "making\n"
        searched = subprocess.run([sys.executable, "-c", SEARCHER], capture_output=True, text=True, timeout=300,
                                  env=cli_env(state_dir))
    finally:
        stop(maker, signal.SIGUSR1)  # between two keys: none is left half written
    assert searched.returncode == 0, searched.stderr
    asked, searched_again = map(int, searched.stdout.split())
    assert searched_again >= 3, f"{asked} searches met no destroyed key: nothing was tested"
    assert "no longer valid" not in searched.stderr and "session lost" not in searched.stderr, searched.stderr
