"""A key handle the process keeps goes stale when another session destroys the key (another
process's `hsm master retire`, say): the session is opened again and the key looked up again, and
the log says what happened, an expected event, not a lost session. A search that finds objects
destroyed before it reads them leaves them out, in the same session."""

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
from signserver.hsm import session as session_module
from signserver.hsm.label_text import LabelTextMapper
from signserver.hsm.session import TokenSession, find_token
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
# process that has written to the token itself), until its searches met three destroyed keys.
SEARCHER = """
import logging, time
from pkcs11 import Attribute, ObjectClass
from signserver.config import load_config
from signserver.hsm.session import TokenSession

logging.basicConfig(level=logging.INFO)
config = load_config()
session = TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin())
deadline = time.monotonic() + 120  # a bound for a machine where they never meet
while session.vanished < 3 and time.monotonic() < deadline:
    session.run(lambda s: session.find(s, {Attribute.CLASS: ObjectClass.SECRET_KEY}), "search")
print(session.searches, session.vanished, flush=True)
"""


@requires_softhsm("another process on the soft token (openCryptoki's is one per system, behind its daemon)")
def test_a_search_that_meets_keys_destroyed_meanwhile_leaves_them_out_without_logging_in_again(config, state_dir):
    """On the code before, such a search was made again, up to three times, and then the whole
    call once more in a new session: under the maker below it failed (`cannot search: the token
    does not answer`) in a run of the whole suite on a slower machine."""
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
    searches, vanished = map(int, searched.stdout.split())
    assert vanished >= 3, f"{searches} searches met {vanished} destroyed keys: too few to test"
    assert "no longer valid" not in searched.stderr and "session lost" not in searched.stderr, searched.stderr


DOOMED = "doomed-as-read"


class DestroyingAsItIsRead(LabelTextMapper):
    """The mapper of the searching session, which python-pkcs11 calls as it reads each object the
    search found: through ``other`` (a session of the same process), it destroys every object
    labelled DOOMED, and makes two more, so that the search's next handles are stale, in the
    search and in any search made again."""

    other: pkcs11.Session | None = None

    def unpack_attributes(self, key, value):
        other = DestroyingAsItIsRead.other
        if key == pkcs11.Attribute.CLASS and other is not None:
            for doomed in list(other.get_objects({pkcs11.Attribute.LABEL: DOOMED})):
                doomed.destroy()
            make_doomed(other, 2)
        return super().unpack_attributes(key, value)


def make_doomed(session: pkcs11.Session, count: int) -> None:
    for _ in range(count):  # session objects: seen by every session of this process, and by no other process
        session.create_object({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.DATA, pkcs11.Attribute.TOKEN: False,
                               pkcs11.Attribute.LABEL: DOOMED, pkcs11.Attribute.VALUE: b"doomed"})


@requires_softhsm("stale handles: openCryptoki's soft token still reads, in a search under way, the objects "
                  "destroyed meanwhile (measured: the three found)")
def test_a_search_whose_every_attempt_meets_a_destroyed_object_still_answers(config, keystore, monkeypatch, caplog):
    """On the code before, every attempt met a stale handle: the search gave up after three, the
    call was made once more in a new session, and failed: HsmUnavailable."""
    monkeypatch.setattr(session_module, "LabelTextMapper", DestroyingAsItIsRead)
    searching = TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin())
    with pkcs11_lock():
        token = find_token(load_module(config.hsm.module), config.hsm.token_label, config.hsm.module)
        with token.open(rw=True) as other:  # logged in already: the test process's keystore is
            make_doomed(other, 3)
            DestroyingAsItIsRead.other = other
            try:
                with caplog.at_level(logging.INFO, logger="signserver.hsm.session"):
                    found = searching.run(lambda s: searching.find(s, {pkcs11.Attribute.LABEL: DOOMED}), "search")
            finally:
                DestroyingAsItIsRead.other = None
                searching.close()
    assert searching.searches == 1
    assert (searching.vanished, len(found)) == (2, 1)  # the first object read destroyed the two others
    assert caplog.records == []  # no stale handle sent to run, no session opened again
