"""A forked child signs on its own; lost sessions and a re-initialised module are recovered."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

import pkcs11
import pytest

from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.module import load_module, pkcs11_lock, raw_module
from signserver.hsm.session import find_token
from signserver.secret import Secret
from tests.conftest import cli_env, requires_softhsm
from tests.hsm.test_keystore import verify

# The scheme each key algorithm the tests may get from the token signs with.
SCHEMES = {KeyAlgorithm.EC_P256: SignatureAlgorithm.ECDSA_SHA256,
           KeyAlgorithm.RSA_2048: SignatureAlgorithm.RSA_PKCS1V15_SHA256}


@pytest.fixture
def key(keystore, label, token_key_algorithm):
    return keystore.generate(token_key_algorithm, label)


def sign_and_check(keystore, key, message: bytes) -> None:
    signature = keystore.sign_digest(key.key_id, hashlib.sha256(message).digest(), SCHEMES[key.algorithm])
    verify(keystore.public_key(key.key_id), signature, SCHEMES[key.algorithm], message)


# Run in a process of its own: the server's supervisor forks before anything starts gRPC, while a
# test process may hold gRPC's threads (and their locks) from earlier tests, which a forked child
# inherits locked (such a child hung once, its parent waiting on the pipe).
FORKING_SIGNER = """
import hashlib, os, sys
from signserver.config import load_config
from signserver.hsm.algorithms import SignatureAlgorithm
from signserver.service import SignService

key_id, scheme = sys.argv[1], SignatureAlgorithm(sys.argv[2])
config = load_config()
keys = SignService.from_config(config).keys

def sign(message):
    return keys.sign_digest(key_id, hashlib.sha256(message).digest(), scheme).hex()

print("before", sign(b"before the fork"))  # this process's session is open and logged in
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # the child: report the signature or the error through the pipe, then leave
    try:
        os.close(read_end)
        os.write(write_end, b"ok " + sign(b"in the child").encode())
    except BaseException as exc:
        os.write(write_end, b"error " + repr(exc).encode())
    finally:
        os._exit(0)
os.close(write_end)
with os.fdopen(read_end, "rb") as pipe:
    print("child", pipe.read().decode())
print("child-exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("after", sign(b"after the fork, in the parent"))
"""


def test_forked_child_signs_and_parent_goes_on(keystore, key, state_dir):
    scheme = SCHEMES[key.algorithm]
    run = subprocess.run([sys.executable, "-c", FORKING_SIGNER, key.key_id, scheme.value], env=cli_env(state_dir),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert report["child-exit"] == "0", "the child crashed"
    assert report["child"].startswith("ok "), report["child"]
    public = keystore.public_key(key.key_id)
    for name, message in (("before", b"before the fork"), ("child", b"in the child"),
                          ("after", b"after the fork, in the parent")):
        verify(public, bytes.fromhex(report[name].removeprefix("ok ")), scheme, message)


def test_sessions_closed_under_the_server_are_reopened(keystore, key, config, caplog):
    sign_and_check(keystore, key, b"before")
    with pkcs11_lock():
        lib = load_module(config.hsm.module)
        slot_id = find_token(lib, config.hsm.token_label, config.hsm.module).slot.slot_id
        assert raw_module(config.hsm.module).close_all_sessions(slot_id) == 0
    with caplog.at_level(logging.WARNING, logger="signserver.hsm.session"):
        sign_and_check(keystore, key, b"after C_CloseAllSessions")
    assert "HSM session lost" in caplog.text


def test_module_reinitialised_under_the_server_is_recovered(keystore, key, config, caplog):
    sign_and_check(keystore, key, b"before")
    with pkcs11_lock():
        pkcs11.lib(str(config.hsm.module)).reinitialize()
    with caplog.at_level(logging.WARNING, logger="signserver.hsm.session"):
        sign_and_check(keystore, key, b"after C_Finalize and C_Initialize")
    assert "HSM session lost" in caplog.text


def test_module_finalised_under_the_server_is_initialised_again(keystore, key, config):
    sign_and_check(keystore, key, b"before")
    with pkcs11_lock():
        pkcs11.lib(str(config.hsm.module)).finalize()
    sign_and_check(keystore, key, b"after C_Finalize")


def test_key_deleted_by_another_session_is_not_found(keystore, key, config):
    from signserver.errors import KeyNotFound

    sign_and_check(keystore, key, b"handle now cached")
    with pkcs11_lock():
        lib = load_module(config.hsm.module)
        token = find_token(lib, config.hsm.token_label, config.hsm.module)
        with token.open(rw=True) as other:
            for obj in list(other.get_objects({pkcs11.Attribute.ID: bytes.fromhex(key.key_id)})):
                obj.destroy()
    with pytest.raises(KeyNotFound):
        keystore.sign_digest(key.key_id, bytes(32), SCHEMES[key.algorithm])



@requires_softhsm("one soft token per system; this test makes a second token")
def test_a_session_left_stale_by_another_re_initialisation_never_reaches_another_token(key, config):
    """SoftHSM numbers sessions afresh after C_Initialize, so a handle kept from before may name
    another session of the process, on another token. After another session object re-initialises
    the module (as one does when it looks for a token made since), this one reopens its own
    session: it never signs, generates or closes through a stranger's."""
    import subprocess
    import uuid

    from signserver.hsm.keystore import HsmKeyStore
    from signserver.hsm.module import reinitialise_module
    from signserver.hsm.session import TokenSession

    other_label, other_pin = f"other-{uuid.uuid4().hex[:8]}", "user-pin-of-the-other"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", other_label, "--so-pin",
                    "so-pin-of-the-other", "--pin", other_pin], check=True, capture_output=True)
    reinitialise_module(config.hsm.module)
    mine = HsmKeyStore(TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin(environ={})))
    sign_and_check(mine, key, b"the first session since the module was initialised")
    reinitialise_module(config.hsm.module)  # what a session looking for a new token does
    other = HsmKeyStore(TokenSession(config.hsm.module, other_label, Secret(other_pin)))
    other_key = other.generate(KeyAlgorithm.EC_P256, "only-on-the-other-token")

    sign_and_check(mine, key, b"after another session re-initialised the module")
    made = mine.generate(KeyAlgorithm.EC_P256, "made-after-the-re-initialisation")
    with pkcs11_lock():
        token = find_token(load_module(config.hsm.module), config.hsm.token_label, config.hsm.module)
        with token.open() as own:
            assert list(own.get_objects({pkcs11.Attribute.ID: bytes.fromhex(made.key_id)})), \
                "a key generated after the re-initialisation landed on another token"
    mine.close()
    sign_and_check(other, other_key, b"the other session was not closed by the first")
