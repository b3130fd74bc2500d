"""Keys made while another process searches the token come out whole, or not at all.

SoftHSM's file token lets a process that reads an object another process is still making write
default attributes into it: the new key loses its id and label though its generation succeeded,
and no search finds it again (signserver/hsm/token_files.py). On the code before, a CA set-up so
made a TSA key whose public half it could then not find, and failed."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import uuid

import pkcs11
import pkcs11.exceptions as p11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from signserver.errors import HsmOperationFailed
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.master_keys import MasterKeys
from signserver.hsm.new_objects import MAKE_ATTEMPTS, make_intact
from signserver.hsm.token_files import LOCK_NAME, lock_path_of
from tests.conftest import cli_env, requires_softhsm

pytestmark = pytest.mark.one_store  # the token alone
softhsm_only = requires_softhsm("SoftHSM's file token is the one whose readers write into objects being made, "
                                "and the one signserver locks")

# Another signserver process searching the token without pause and reading what it finds, as the
# CA's background pass (LeftoverServiceKeys) and `hsm list` or `hsm master status` do.
SEARCHER = """
import signal
from signserver.config import load_config
from signserver.errors import SignServerError
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.master_keys import MasterKeys
from signserver.hsm.session import TokenSession

config = load_config()
keys = HsmKeyStore(TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin()))
masters = MasterKeys(keys.session)
stopping = []
signal.signal(signal.SIGUSR1, lambda *_: stopping.append(True))
print("searching", flush=True)
while not stopping:
    try:
        keys.public_keys(keys.list())
        masters.on_token()
    except SignServerError:  # an object destroyed as it was read
        pass
"""

# The searches met about 3 % of the P-256 pairs and 8 % of the AES keys made beside them on the
# code before (measured on this machine class): each test below failed there in each of 8 runs.
MADE = 150


@pytest.fixture
def searcher(state_dir):
    process = subprocess.Popen([sys.executable, "-c", SEARCHER], stdout=subprocess.PIPE, text=True,
                               env=cli_env(state_dir))
    try:
        assert process.stdout.readline() == "searching\n"
        yield process
    finally:
        stop(process, signal.SIGUSR1)


def stop(process: subprocess.Popen, asked_by: int | None = None) -> None:
    """Let the process end where it chooses to (between two searches), and kill it only if it does
    not: a process killed while it logs in leaves SoftHSM's token file empty (a login rewrites it,
    and a session logs in again when a key whose handle it kept is destroyed), and every later
    process finds no token."""
    if asked_by is not None and process.poll() is None:
        process.send_signal(asked_by)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@softhsm_only
def test_key_pairs_made_while_another_process_searches_are_found_by_id_and_label(keystore, searcher):
    for _ in range(MADE):
        label = f"searched-{uuid.uuid4().hex[:12]}"
        key = keystore.generate(KeyAlgorithm.EC_P256, label)
        try:
            assert keystore.find_by_label(label).key_id == key.key_id
            keystore.public_key(key.key_id)  # searched by id: KeyNotFound for a pair that lost its public half
        finally:
            keystore.delete(key.key_id)
    assert searcher.poll() is None


@softhsm_only
def test_shared_keys_made_while_another_process_searches_are_found_by_label(keystore, searcher):
    masters = MasterKeys(keystore.session)
    for _ in range(MADE):
        label = f"searched-master-{uuid.uuid4().hex[:12]}"
        masters.create(label)
        try:
            assert masters.present(label)  # searched by label, not from the cache
        finally:
            masters.destroy(label)
    assert searcher.poll() is None


# --- another program's reads, which take no lock: the maker's own check ------------------------

def aes_key(session: pkcs11.Session, key_id: bytes, label: str) -> pkcs11.SecretKey:
    return session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                                  Attribute.VALUE: os.urandom(32), Attribute.TOKEN: True, Attribute.PRIVATE: True,
                                  Attribute.ID: key_id, Attribute.LABEL: label})


def secret_keys(keystore, session) -> int:
    return len(keystore.session.find(session, {Attribute.CLASS: ObjectClass.SECRET_KEY}))


def test_a_key_made_without_its_id_and_label_is_destroyed_and_made_again(keystore, caplog):
    key_id, label, made = os.urandom(16), f"remade-{uuid.uuid4().hex[:12]}", []

    def make(session):
        # As SoftHSM leaves a spoiled key: the defaults, an empty id and label.
        spoiled = len(made) < 2
        made.append(aes_key(session, b"" if spoiled else key_id, "" if spoiled else label))
        return made[-1:]

    def run(session):
        before = secret_keys(keystore, session)
        key, = make_intact(lambda: make(session), key_id, label, "the AES key")
        added = secret_keys(keystore, session) - before
        kept = key.get_attributes([Attribute.ID, Attribute.LABEL])
        key.destroy()
        return added, kept

    caplog.set_level(logging.WARNING, logger="signserver.hsm.new_objects")
    added, kept = keystore.session.run(run, "make a key")
    assert (len(made), added, kept) == (3, 1, {Attribute.ID: key_id, Attribute.LABEL: label})
    assert sum("lost the id and label of the AES key" in r.getMessage() for r in caplog.records) == 2


def test_a_key_spoiled_each_time_is_an_error_and_leaves_nothing(keystore):
    made = []

    def run(session):
        before = secret_keys(keystore, session)
        with pytest.raises(HsmOperationFailed, match=f"each of the {MAKE_ATTEMPTS} times"):
            make_intact(lambda: made.append(aes_key(session, b"", "")) or made[-1:], os.urandom(16), "never",
                        "the AES key")
        return len(made), secret_keys(keystore, session) - before

    assert keystore.session.run(run, "make a key") == (MAKE_ATTEMPTS, 0)


def test_a_generation_the_token_failed_is_tried_again_up_to_the_last_attempt(keystore):
    key_id, label, tries = os.urandom(16), f"failed-once-{uuid.uuid4().hex[:12]}", []

    def make(session, failures):
        tries.append(True)
        if len(tries) <= failures:
            raise p11.FunctionFailed()  # what SoftHSM answers when a reader came a moment earlier
        return [aes_key(session, key_id, label)]

    def run(session):
        key, = make_intact(lambda: make(session, 1), key_id, label, "the AES key")
        key.destroy()
        tries.clear()
        with pytest.raises(p11.FunctionFailed):
            make_intact(lambda: make(session, MAKE_ATTEMPTS), key_id, label, "the AES key")
        return len(tries)

    assert keystore.session.run(run, "make a key") == MAKE_ATTEMPTS


# --- the lock ----------------------------------------------------------------------------------

HOLDER = """
import time
from signserver.config import load_config
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.session import TokenSession

config = load_config()
keys = HsmKeyStore(TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin()))

def search_slowly(session):
    keys.session.find(session, {})
    print("holding", flush=True)
    time.sleep(1.5)
    print("done", flush=True)

keys.session.run(search_slowly, "search")
"""


@softhsm_only
def test_a_search_waits_while_another_signserver_process_searches(keystore, state_dir):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True,
                              env=cli_env(state_dir))
    try:
        assert holder.stdout.readline() == "holding\n"
        keystore.list()
        # The holder says "done" before it lets go: a search that waited finds it said.
        assert select.select([holder.stdout], [], [], 0)[0] == [holder.stdout]
        assert holder.stdout.readline() == "done\n"
    finally:
        stop(holder)


@pytest.mark.parametrize(("conf", "expected"), [
    ("directories.tokendir = /srv/tokens/\nobjectstore.backend = file\n", f"/srv/tokens/{LOCK_NAME}"),
    ("# directories.tokendir = /old\ndirectories.tokendir=/srv/t\n", f"/srv/t/{LOCK_NAME}"),
    ("directories.tokendir = /srv/tokens\nobjectstore.backend = db\n", None),  # objects in SQLite
    ("log.level = ERROR\n", None),
])
def test_the_lock_is_in_the_token_directory_of_a_file_token(tmp_path, conf, expected):
    (tmp_path / "softhsm2.conf").write_text(conf)
    found = lock_path_of(tmp_path / "softhsm2.conf")
    assert (str(found) if found else None) == expected
    assert lock_path_of(tmp_path / "missing.conf") is None
