"""Token administration on a second SoftHSM token: init, PINs, CSR, certificate import."""

from __future__ import annotations

import datetime
import subprocess
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from signserver.errors import (AlreadyExists, HsmLoginFailed, HsmUnavailable, InvalidArgument, TokenNotFound,
                               UnsupportedAlgorithm)
from signserver.hsm.admin import TokenAdministrator
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.module import load_module, pkcs11_lock
from signserver.hsm.session import TokenSession
from signserver.secret import Secret
from signserver.service import SignService
from tests.conftest import requires_softhsm

pytestmark = requires_softhsm("one soft token per system (initialised by opencryptoki-setup); these tests make "
                              "tokens of their own")

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


def test_a_token_read_without_its_user_pin_is_read_again_before_a_login_fails(config, admin):
    # SoftHSM 2.6 rewrites a token's file at every login, and a process whose module reads the file
    # meanwhile may hold the token without its user PIN (seen once in a two-worker server: every
    # call of one worker failed with "the token's user PIN is not initialised"). Here this process
    # reads a token whose user PIN is not set yet; another process then sets it.
    label = f"stale-{uuid.uuid4().hex[:8]}"
    free = next(s.slot_id for s in admin.slots() if not s.initialised)
    module = str(config.hsm.module)
    subprocess.run(["pkcs11-tool", "--module", module, "--slot", str(free), "--init-token", "--label", label,
                    "--so-pin", SO_PIN.reveal()], check=True, capture_output=True)
    with pytest.raises(HsmUnavailable, match="the token's user PIN is not initialised"):
        can_log_in(config, label, USER_PIN)  # read again, and still without one: said as it is
    # This process now holds the token without a user PIN, as a worker that read it mid-write would.
    subprocess.run(["pkcs11-tool", "--module", module, "--token-label", label, "--login", "--login-type", "so",
                    "--so-pin", SO_PIN.reveal(), "--init-pin", "--new-pin", USER_PIN.reveal()],
                   check=True, capture_output=True)
    assert can_log_in(config, label, USER_PIN)


# --- tokens that are not SoftHSM: current SO PIN, re-initialisation, PIN lengths, SO PIN change ---

FACTORY_SO_PIN = Secret("87654321")  # what openCryptoki's tokens verify at C_InitToken until changed


def slot_of(admin: TokenAdministrator, token: str) -> int:
    return next(s.slot_id for s in admin.slots() if s.token_label == token)


def so_pin_works(admin: TokenAdministrator, token: str, so_pin: Secret) -> bool:
    try:
        admin.unblock_user_pin(token, so_pin, USER_PIN)
        return True
    except HsmLoginFailed:
        return False


def test_init_with_the_current_so_pin_leaves_the_new_one(admin):
    # SoftHSM's free slot takes any PIN at C_InitToken, as openCryptoki's fresh token takes its
    # factory one: the new SO PIN must be set after it.
    label = f"admin-{uuid.uuid4().hex[:8]}"
    admin.init_token(label, SO_PIN, USER_PIN, current_so_pin=FACTORY_SO_PIN)
    assert so_pin_works(admin, label, SO_PIN)
    assert not so_pin_works(admin, label, FACTORY_SO_PIN)


def test_an_initialised_token_is_initialised_again_only_when_confirmed_with_its_so_pin(admin, token, config):
    service = SignService.from_config(config, user_pin=USER_PIN, token_label=token)
    service.generate_key(KeyAlgorithm.EC_P256, "kept")
    service.close()
    slot = slot_of(admin, token)

    with pytest.raises(InvalidArgument, match="destroys every key"):
        admin.init_token(token, SO_PIN, USER_PIN, slot)
    with pytest.raises(InvalidArgument, match="current SO PIN"):
        admin.init_token(token, SO_PIN, USER_PIN, slot, reinitialise=True)
    with pytest.raises(HsmLoginFailed, match="refused the PIN") as refused:
        admin.init_token(token, SO_PIN, USER_PIN, slot, current_so_pin=Secret("not-the-so-pin"), reinitialise=True)
    assert "CKR" not in str(refused.value)
    store = HsmKeyStore(TokenSession(config.hsm.module, token, USER_PIN))
    assert [k.label for k in store.list()] == ["kept"]
    store.session.close()  # C_InitToken refuses while a session is open on the token

    new_so_pin, new_user_pin = Secret("another-so-pin"), Secret("another-user-pin")
    admin.init_token(token, new_so_pin, new_user_pin, slot, current_so_pin=SO_PIN, reinitialise=True)
    store = HsmKeyStore(TokenSession(config.hsm.module, token, new_user_pin))
    assert store.list() == []
    store.session.close()
    assert can_log_in(config, token, new_user_pin) and not can_log_in(config, token, USER_PIN)
    assert not so_pin_works(admin, token, SO_PIN) and so_pin_works(admin, token, new_so_pin)


def test_another_tokens_label_is_still_refused_for_a_chosen_slot(admin, token):
    other = f"admin-{uuid.uuid4().hex[:8]}"
    admin.init_token(other, SO_PIN, USER_PIN)
    with pytest.raises(AlreadyExists, match=other):
        admin.init_token(other, SO_PIN, USER_PIN, slot_of(admin, token), current_so_pin=SO_PIN, reinitialise=True)


def test_pins_outside_the_tokens_lengths_are_refused_before_the_token_sees_them(admin, token, config):
    status = next(s for s in admin.slots() if s.token_label == token)
    assert (status.min_pin_length, status.max_pin_length) == (4, 255)  # SoftHSM's
    label = f"admin-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidArgument, match="4 to 255 characters") as refused:
        admin.init_token(label, SO_PIN, Secret("123"))
    assert "123" not in str(refused.value)
    with pytest.raises(InvalidArgument, match="4 to 255 characters"):
        admin.init_token(label, Secret("x" * 256), USER_PIN)
    assert label not in [s.token_label for s in admin.slots()]

    with pytest.raises(InvalidArgument, match="new user PIN has 3 characters"):
        admin.change_user_pin(token, Secret("wrong-old-pin"), Secret("abc"))
    assert "user PIN count low" not in flags_of(admin, token), "the old PIN reached the token"
    with pytest.raises(InvalidArgument, match="4 to 255"):
        admin.unblock_user_pin(token, SO_PIN, Secret("abc"))
    assert can_log_in(config, token, USER_PIN)


def test_change_so_pin(admin, token):
    new_so_pin = Secret("the-new-so-pin")
    with pytest.raises(HsmLoginFailed):
        admin.change_so_pin(token, Secret("wrong-so-pin"), new_so_pin)
    admin.change_so_pin(token, SO_PIN, new_so_pin)
    assert so_pin_works(admin, token, new_so_pin)
    assert not so_pin_works(admin, token, SO_PIN)
    with pytest.raises(InvalidArgument, match="4 to 255"):
        admin.change_so_pin(token, new_so_pin, Secret("so"))


@pytest.mark.parametrize("algorithm", [SignatureAlgorithm.RSA_PSS_SHA256, SignatureAlgorithm.RSA_PSS_SHA384,
                                       SignatureAlgorithm.RSA_PSS_SHA512])
def test_csr_with_rsa_pss_is_an_rsassa_pss_request(config, token, algorithm, tmp_path):
    service = SignService.from_config(config, user_pin=USER_PIN, token_label=token)
    service.generate_key(KeyAlgorithm.RSA_2048, "pss")
    request = service.certificate_request("pss", x509.Name.from_rfc4514_string("CN=Lei Ka Io,C=MO"), algorithm)
    service.close()
    assert request.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    parameters = request.signature_algorithm_parameters
    digest = algorithm.hash.cryptography_hash
    assert isinstance(parameters, padding.PSS) and isinstance(parameters.mgf, padding.MGF1)
    assert parameters.mgf._algorithm.name == digest.name and parameters._salt_length == digest.digest_size
    assert request.signature_hash_algorithm.name == digest.name
    assert request.is_signature_valid

    path = tmp_path / "request.pem"
    path.write_bytes(request.public_bytes(Encoding.PEM))
    result = subprocess.run(["openssl", "req", "-in", str(path), "-noout", "-verify", "-text"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "verify OK" in result.stdout + result.stderr, result.stderr
    assert "rsassaPss" in result.stdout
    assert f"Salt Length: 0x{digest.digest_size:X}" in result.stdout


def test_csr_refuses_a_scheme_of_another_key_type(config, token):
    service = SignService.from_config(config, user_pin=USER_PIN, token_label=token)
    service.generate_key(KeyAlgorithm.EC_P256, "ec")
    with pytest.raises(UnsupportedAlgorithm, match="ec-p256 key does not sign rsa-pss-sha256"):
        service.certificate_request("ec", x509.Name.from_rfc4514_string("CN=x"), SignatureAlgorithm.RSA_PSS_SHA256)
    request = service.certificate_request("ec", x509.Name.from_rfc4514_string("CN=x"), SignatureAlgorithm.ECDSA_SHA384)
    assert request.signature_hash_algorithm.name == HashAlgorithm.SHA384.cryptography_hash.name
    service.close()
