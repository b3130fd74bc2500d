"""Sealing OTP seeds on a token without AES-GCM: AES-CBC-PAD then HMAC-SHA256 in the token, the
scheme recorded in the sealed value, and every scheme read whatever the token prefers now.

The poorer token is SoftHSM seen through the mechanism list openCryptoki's soft token offers
(RSA, AES-CBC, generic secrets and HMAC; no EC, no AES-GCM, no AES key wrap); run on openCryptoki's
soft token itself, the same tests use its own list, and the sealing keys are made there as on a token
that does not know CKA_WRAP_WITH_TRUSTED."""

from __future__ import annotations

import logging

import hashlib
import json
import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from signserver.accounts import otp
from signserver.errors import AuthenticationFailed, DataCorrupted, HsmOperationFailed, UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.capabilities import TokenCapabilities
from signserver.hsm.keystore import HsmKeyStore
from signserver.hsm.sealing import SEALING_LABEL, SealingKey, SealingScheme
from signserver.hsm.session import TokenSession
from signserver.secret import Secret
from signserver.service import SignService
from tests.conftest import ON_OPENCRYPTOKI, PASSWORD, enrol, requires_softhsm, service_with
from tests.hsm.test_ceremony import (
    DESTINATION_USER,
    SOURCE_SO,
    SOURCE_USER,
    Cli,
    copy_database,
    init_token,
    objects,
    tokens,  # noqa: F401 (a fixture)
)
from tests.hsm.opencryptoki_like import OPENCRYPTOKI_SOFT_TOKEN as OPENCRYPTOKI_MECHANISMS
from tests.hsm.test_keystore import verify

pytestmark = pytest.mark.one_store  # its services' databases are SQLite files of their own

RSA_ONLY = TokenCapabilities(frozenset({Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS,
                                        Mechanism.AES_KEY_GEN, Mechanism.AES_CBC_PAD}))
SEED, CONTEXT = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", b"user-of-the-seed"
RSA_SIGNATURE = SignatureAlgorithm.RSA_PKCS1V15_SHA256


class TokenWithMechanisms(TokenSession):
    """A real session to a SoftHSM token that advertises only ``mechanisms``."""

    def __init__(self, *args, mechanisms: TokenCapabilities):
        super().__init__(*args)
        self._advertised = mechanisms

    def capabilities(self) -> TokenCapabilities:
        return self._advertised


@pytest.fixture
def sealing_label() -> str:
    return f"test-sealing-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fallback(service, sealing_label) -> SealingKey:
    return SealingKey(service.keys.session, sealing_label, capabilities=OPENCRYPTOKI_MECHANISMS)


def test_without_aes_gcm_seeds_are_sealed_with_aes_cbc_and_an_hmac_key_on_the_token(service, fallback):
    sealed = fallback.seal(SEED, CONTEXT)

    assert fallback.scheme() is SealingScheme.AES_CBC_HMAC_SHA256
    assert sealed[:1] == b"\x02" and SEED not in sealed
    assert len(sealed) == 1 + 16 + 48 + 32  # version, IV, the padded 32-byte seed, MAC
    assert fallback.unseal(sealed, CONTEXT) == SEED
    # openCryptoki refuses CKA_WRAP_WITH_TRUSTED: its keys are not extractable at all.
    copy_rule = {Attribute.EXTRACTABLE: False} if ON_OPENCRYPTOKI else {Attribute.EXTRACTABLE: True,
                                                                        Attribute.WRAP_WITH_TRUSTED: True}
    session = service.keys.session
    [mac_key] = session.run(lambda s: [
        {a: o[a] for a in (Attribute.KEY_TYPE, Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE,
                           Attribute.SIGN, Attribute.VERIFY, Attribute.ENCRYPT, Attribute.DECRYPT,
                           Attribute.WRAP, Attribute.UNWRAP, Attribute.DERIVE, *copy_rule)}
        for o in session.find(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: fallback.mac_label})],
        "read the MAC key")
    assert mac_key == {Attribute.KEY_TYPE: KeyType.GENERIC_SECRET, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                       Attribute.SENSITIVE: True, Attribute.SIGN: True, Attribute.VERIFY: True,
                       Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.WRAP: False,
                       Attribute.UNWRAP: False, Attribute.DERIVE: False, **copy_rule}
    assert fallback.describe().copyable is not ON_OPENCRYPTOKI
    # The same plaintext sealed twice differs (a fresh IV each time).
    assert fallback.seal(SEED, CONTEXT) != sealed


@pytest.mark.parametrize("position", [0, 1, 16, 17, 40, 64, 65, -1])
def test_a_value_altered_anywhere_is_refused(fallback, position):
    sealed = bytearray(fallback.seal(SEED, CONTEXT))
    sealed[position] ^= 0x01

    with pytest.raises(DataCorrupted):
        fallback.unseal(bytes(sealed), CONTEXT)


@pytest.mark.parametrize("cut", [lambda v: v[:-1], lambda v: v[:-32], lambda v: v[:33], lambda v: v[:1], lambda v: b"",
                                 lambda v: v + b"\x00"])
def test_a_truncated_or_extended_value_is_refused(fallback, cut):
    with pytest.raises(DataCorrupted):
        fallback.unseal(cut(fallback.seal(SEED, CONTEXT)), CONTEXT)


def test_a_value_opens_only_in_its_own_context(fallback):
    sealed = fallback.seal(SEED, b"alice")

    for other in (b"bob", b"alic", b"alicee", b""):
        with pytest.raises(DataCorrupted):
            fallback.unseal(sealed, other)
    assert fallback.unseal(sealed, b"alice") == SEED


def test_the_context_and_the_ciphertext_cannot_trade_bytes(fallback):
    """The MAC covers the context's length: a value whose first ciphertext block is moved to the
    end of the context has the same bytes in the same order, and is still refused."""
    sealed = fallback.seal(SEED, b"ab")
    version, iv, ciphertext, mac = sealed[:1], sealed[1:17], sealed[17:-32], sealed[-32:]

    with pytest.raises(DataCorrupted):
        fallback.unseal(version + iv + ciphertext[16:] + mac, b"ab" + ciphertext[:16])


@requires_softhsm("AES-GCM")
def test_values_sealed_under_either_scheme_open_whatever_the_token_prefers_now(service, sealing_label):
    """The same keys on a token that offers both schemes: one sealing object sees AES-GCM, the
    other only what openCryptoki offers."""
    preferring_gcm = SealingKey(service.keys.session, sealing_label)
    without_gcm = SealingKey(service.keys.session, sealing_label, capabilities=OPENCRYPTOKI_MECHANISMS)
    assert preferring_gcm.scheme() is SealingScheme.AES_GCM

    sealed_with_gcm = preferring_gcm.seal(SEED, CONTEXT)
    sealed_without = without_gcm.seal(SEED, CONTEXT)

    assert (sealed_with_gcm[:1], sealed_without[:1]) == (b"\x01", b"\x02")
    assert without_gcm.unseal(sealed_with_gcm, CONTEXT) == SEED
    assert preferring_gcm.unseal(sealed_without, CONTEXT) == SEED
    assert preferring_gcm.describe().mac is not None  # the MAC key is reported (and copied) where it exists


def test_a_token_that_offers_neither_scheme_is_refused_naming_what_it_lacks(service, sealing_label):
    sealing = SealingKey(service.keys.session, sealing_label, capabilities=RSA_ONLY)

    with pytest.raises(UnsupportedAlgorithm) as refused:
        sealing.seal(SEED, CONTEXT)

    message = str(refused.value)
    assert "sealing OTP seeds" in message and "AES_GCM" in message
    assert "AES_CBC_PAD" in message and "SHA256_HMAC" in message and "GENERIC_SECRET_KEY_GEN" in message
    assert objects(service, {Attribute.LABEL: sealing_label}) == []  # nothing was made


def test_a_value_sealed_under_a_mac_key_the_token_lacks_says_so(service, fallback, sealing_label, caplog):
    sealed = fallback.seal(SEED, CONTEXT)
    session = service.keys.session
    session.run(lambda s: [o.destroy() for o in session.find(s, {Attribute.LABEL: fallback.mac_label})],
                "destroy the MAC key")
    elsewhere = SealingKey(session, sealing_label, capabilities=OPENCRYPTOKI_MECHANISMS)
    session.cache.clear()  # the destroyed key's handle

    with caplog.at_level(logging.ERROR, logger="signserver.hsm.sealing"), \
            pytest.raises(HsmOperationFailed) as refused:
        elsewhere.unseal(sealed, CONTEXT)

    # The caller (an application, on Authorize) learns nothing of the token's keys; the log says what to do.
    assert fallback.mac_label not in str(refused.value)
    assert fallback.mac_label in caplog.text and "key ceremony" in caplog.text


# --- through the service, on a token of its own ------------------------------------------------

def fresh_service_without_gcm(config, tmp_path: Path, clock) -> tuple[SignService, Path]:
    """A service with a database of its own, on a token without AES-GCM: openCryptoki's soft token
    as it is, or a fresh SoftHSM token seen without it. Returns it and its database file."""
    if ON_OPENCRYPTOKI:
        return service_with(config, tmp_path / "signserver.db", clock), tmp_path / "signserver.db"
    token = f"nogcm-{uuid.uuid4().hex[:8]}"
    init_token(token, SOURCE_SO, SOURCE_USER)
    state = tmp_path / "state"
    return service_without_gcm(config, state, token, SOURCE_USER, clock), state / "signserver.db"


def service_without_gcm(config, state: Path, token: str, pin: str, clock) -> SignService:
    """A service on ``token`` that sees every mechanism SoftHSM offers but AES-GCM (so that only
    the sealing of OTP seeds changes, not the wrapping of the holders' keys)."""
    state.mkdir(parents=True, exist_ok=True)
    own = replace(config, state_dir=state, database_url=f"sqlite:///{state / 'signserver.db'}",
                  hsm=replace(config.hsm, token_label=token))
    probe = TokenSession(config.hsm.module, token, Secret(pin))
    without_gcm = TokenCapabilities(probe.capabilities().mechanisms - {Mechanism.AES_GCM})
    session = TokenWithMechanisms(config.hsm.module, token, Secret(pin), mechanisms=without_gcm)
    service = SignService(own, HsmKeyStore(session), clock)
    service.prepare_database()
    return service


def sealed_seed_of(database: Path, username: str) -> bytes:
    with sqlite3.connect(database) as db:
        [(sealed,)] = db.execute("SELECT otp_seed_sealed FROM accounts WHERE username = ?", (username,)).fetchall()
    return bytes(sealed)


def authorize_and_sign(service: SignService, holder, clock, text: str, code: str | None = None) -> None:
    created, seed = holder
    app, _ = service.applications.create(f"app-{uuid.uuid4().hex[:6]}", otp_required=True)
    clock.advance(seconds=30)
    digest = hashlib.sha256(text.encode()).digest()
    token = service.signer.authorize(app, created.account.username, Secret(PASSWORD),
                                     code if code is not None else otp.code_at(seed, clock.now()),
                                     created.credential.id, HashAlgorithm.SHA256, [digest])
    [signature] = service.signer.sign_hashes(app, created.credential.id, Secret(token.token), RSA_SIGNATURE,
                                             [digest])
    verify(load_der_public_key(service.packages.public_key_der(created.credential.key_id)), signature,
           RSA_SIGNATURE, text.encode())


@pytest.mark.sqlite_only  # reads and copies the database file
def test_an_account_made_on_a_token_without_gcm_signs_with_its_otp(config, tmp_path, clock):
    service, database = fresh_service_without_gcm(config, tmp_path, clock)

    holder = enrol(service, key_algorithm=KeyAlgorithm.RSA_2048)

    created, seed = holder
    assert sealed_seed_of(database, created.account.username)[:1] == b"\x02"
    authorize_and_sign(service, holder, clock, "signed without AES-GCM")
    wrong = f"{(int(otp.code_at(seed, clock.now())) + 1) % 1_000_000:06d}"
    with pytest.raises(AuthenticationFailed):
        authorize_and_sign(service, holder, clock, "a wrong OTP", code=wrong)


@requires_softhsm("one soft token per system; the ceremony needs two, and CKA_WRAP_WITH_TRUSTED")
@pytest.mark.sqlite_only  # reads and copies the database file
def test_the_key_ceremony_copies_the_mac_key_and_the_destination_opens_the_seeds(
        config, state_dir, tokens, tmp_path, clock):  # noqa: F811 (the fixture)
    source_token, destination_token = tokens
    source = service_without_gcm(config, tmp_path / "source", source_token, SOURCE_USER, clock)
    holder = enrol(source, key_algorithm=KeyAlgorithm.RSA_2048)
    sealing = SealingKey(source.keys.session, capabilities=OPENCRYPTOKI_MECHANISMS).describe()
    assert sealing.mac is not None and sealing.mac.copyable
    source.keys.session.close()
    cli = Cli(state_dir, tmp_path / "source")
    transport, wrapped_file = tmp_path / "transport.pem", tmp_path / "keys.wrapped"
    assert cli(destination_token, DESTINATION_USER, "receive-begin", "--out", str(transport)).returncode == 0

    exported = cli(source_token, SOURCE_USER, "export", "--transport", str(transport), "--out",
                   str(wrapped_file), "--json", so_pin=SOURCE_SO)

    assert exported.returncode == 0, exported.stderr
    printed = json.loads(exported.stdout)
    assert [(k["label"], k["kind"]) for k in printed["keys"]][-2:] == [
        (SEALING_LABEL, "sealing"), (sealing.mac.label, "sealing-mac")]
    mac_value = printed["keys"][-1]["check_value"]
    wrong_mac = printed["check_values"].replace(f"={mac_value}", "=" + "0" * len(mac_value))
    refused = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file), "--check-value",
                  wrong_mac)
    assert refused.returncode == 1 and "nothing was imported" in refused.stderr
    imported = cli(destination_token, DESTINATION_USER, "import", "--in", str(wrapped_file),
                   "--check-value", printed["check_values"], "--json")
    assert imported.returncode == 0, imported.stderr
    assert all(k["stored"] for k in json.loads(imported.stdout)["keys"])

    (tmp_path / "destination").mkdir()
    copy_database(tmp_path / "source" / "signserver.db", tmp_path / "destination" / "signserver.db")
    destination = service_without_gcm(config, tmp_path / "destination", destination_token, DESTINATION_USER, clock)
    authorize_and_sign(destination, holder, clock, "signed at the destination")
    assert SealingKey(destination.keys.session, capabilities=OPENCRYPTOKI_MECHANISMS).describe() == sealing
