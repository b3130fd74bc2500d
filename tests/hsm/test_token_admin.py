"""Token administration on a second SoftHSM token: init, PINs, CSR, certificate import."""

from __future__ import annotations

import datetime
import subprocess
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from signserver.errors import AlreadyExists, HsmLoginFailed, InvalidArgument, TokenNotFound
from signserver.hsm.admin import TokenAdministrator
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.module import load_module, pkcs11_lock
from signserver.hsm.session import TokenSession
from signserver.secret import Secret
from signserver.service import SignService

SO_PIN = Secret("so-pin-for-tests")
USER_PIN = Secret("user-pin-for-tests")


@pytest.fixture
def admin(config) -> TokenAdministrator:
    return TokenAdministrator(config.hsm.module)


@pytest.fixture
def token(admin) -> str:
    """A freshly initialised second token, labelled uniquely for this test."""
    label = f"admin-{uuid.uuid4().hex[:8]}"
    status = admin.init_token(label, SO_PIN, USER_PIN)
    assert status.initialised and status.token_label == label
    return label


def can_log_in(config, token: str, pin: Secret) -> bool:
    session = TokenSession(config.hsm.module, token, pin)
    try:
        session.run(lambda s: s.generate_random(8), "log in")
        return True
    except HsmLoginFailed:
        return False
    finally:
        session.close()


def flags_of(admin: TokenAdministrator, token: str) -> tuple[str, ...]:
    return next(s.flags for s in admin.slots() if s.token_label == token)


def test_slots_list_the_tokens_with_flags(admin, token, config):
    slots = admin.slots()
    labels = [s.token_label for s in slots]
    assert config.hsm.token_label in labels and token in labels
    assert {"initialised", "user PIN set", "login required"} <= set(flags_of(admin, token))
    assert any(not s.initialised for s in slots)  # SoftHSM always keeps a free slot


def test_a_label_cannot_be_initialised_twice(admin, token):
    with pytest.raises(AlreadyExists, match=token):
        admin.init_token(token, SO_PIN, USER_PIN)


def test_init_refuses_empty_pins_and_long_labels(admin):
    with pytest.raises(InvalidArgument):
        admin.init_token("x", Secret(""), USER_PIN)
    with pytest.raises(InvalidArgument):
        admin.init_token("x" * 33, SO_PIN, USER_PIN)


def test_change_user_pin(admin, token, config):
    new_pin = Secret("a-new-user-pin")
    admin.change_user_pin(token, USER_PIN, new_pin)
    assert can_log_in(config, token, new_pin)
    assert not can_log_in(config, token, USER_PIN)


def test_change_pin_with_wrong_old_pin_is_refused(admin, token, config):
    with pytest.raises(HsmLoginFailed):
        admin.change_user_pin(token, Secret("not-the-pin"), Secret("whatever-new"))
    assert can_log_in(config, token, USER_PIN)


def test_wrong_tries_then_unblock_with_so_pin(admin, token, config):
    for _ in range(3):
        assert not can_log_in(config, token, Secret("wrong-guess"))
    # SoftHSM 2.6 never locks a user PIN; it reports the wrong tries with "count low".
    assert "user PIN count low" in flags_of(admin, token)
    with pytest.raises(HsmLoginFailed):
        admin.unblock_user_pin(token, Secret("wrong-so-pin"), Secret("x-new-pin"))

    unblocked_pin = Secret("pin-set-by-the-so")
    admin.unblock_user_pin(token, SO_PIN, unblocked_pin)
    assert can_log_in(config, token, unblocked_pin)
    assert not can_log_in(config, token, USER_PIN)


def test_a_refused_pin_is_never_tried_again(admin, token, config):
    session = TokenSession(config.hsm.module, token, Secret("wrong-pin"))
    with pytest.raises(HsmLoginFailed, match="refused the PIN"):
        session.run(lambda s: s.generate_random(8), "log in")
    assert can_log_in(config, token, USER_PIN)  # clears SoftHSM's "count low" flag
    assert "user PIN count low" not in flags_of(admin, token)

    with pytest.raises(HsmLoginFailed, match="not tried again"):
        session.run(lambda s: s.generate_random(8), "log in")
    assert "user PIN count low" not in flags_of(admin, token), "the wrong PIN reached the token"


def test_unknown_token_is_reported(admin, config):
    with pytest.raises(TokenNotFound, match="no-such-token"):
        admin.change_user_pin("no-such-token", USER_PIN, SO_PIN)
    session = TokenSession(config.hsm.module, "no-such-token", USER_PIN)
    with pytest.raises(TokenNotFound, match="tokens present:"):
        session.run(lambda s: None, "open")


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519])
def test_csr_made_on_the_token_verifies_with_openssl(config, token, algorithm, tmp_path):
    service = SignService.from_config(config, user_pin=USER_PIN, token_label=token)
    service.generate_key(algorithm, "enrolment")
    subject = x509.Name.from_rfc4514_string("CN=Chan Tai Man,O=Example Ltd,C=MO")
    request = service.certificate_request("enrolment", subject)
    assert request.is_signature_valid and request.subject == subject
    path = tmp_path / "request.pem"
    path.write_bytes(request.public_bytes(Encoding.PEM))
    result = subprocess.run(["openssl", "req", "-in", str(path), "-noout", "-verify"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "verify OK" in (result.stdout + result.stderr)
    service.close()


def test_certificate_is_stored_beside_its_key(config, token):
    service = SignService.from_config(config, user_pin=USER_PIN, token_label=token)
    key = service.generate_key(KeyAlgorithm.EC_P256, "with-certificate")
    other = service.generate_key(KeyAlgorithm.EC_P256, "another")
    now = datetime.datetime.now(datetime.timezone.utc)
    from signserver.hsm.crypto_keys import hsm_private_key

    private = hsm_private_key(service.keys, key.key_id)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "with-certificate")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(private, hashes.SHA256()))
    with pytest.raises(InvalidArgument, match="not the public key"):
        service.import_certificate(other.key_id, certificate)
    service.import_certificate("with-certificate", certificate)
    assert service.keys.certificate(key.key_id) == certificate
    assert service.keys.certificate(other.key_id) is None
    service.close()


def test_keystore_on_a_token_without_the_pin(config, token):
    store = HsmKeyStore(TokenSession(config.hsm.module, token, Secret("nope")))
    with pytest.raises(HsmLoginFailed):
        store.list()


def test_a_token_made_by_another_process_after_start_is_found(config):
    # SoftHSM reads its tokens when the module is initialised, and misses one that another process
    # creates later, or is writing at that moment: the session initialises it again to look.
    with pkcs11_lock():
        load_module(config.hsm.module)  # this process's module is up before the token exists
    label = f"later-{uuid.uuid4().hex[:8]}"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN.reveal(),
                    "--pin", USER_PIN.reveal()], check=True, capture_output=True)
    assert can_log_in(config, label, USER_PIN)
