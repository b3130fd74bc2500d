"""Holder keys as signing data packages: nothing of a holder's stays on the token, an open key
cannot leave it, and the database with the token's PIN but without the holder signs nothing."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections import Counter

import pytest
from pkcs11 import Attribute, Mechanism
from pkcs11.exceptions import KeyUnextractable
from sqlalchemy import insert, select, update

from signserver.accounts import holder_seal
from signserver.accounts.packages import package_context
from signserver.errors import (
    ActivationRefused,
    CredentialUnusable,
    DataCorrupted,
    SignServerError,
)
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.packages import KeyToOpen
from signserver.secret import Secret
from signserver.signing import activation
from signserver.signing.hash_signer import Spent
from signserver.signing import activation
from signserver.store.schema import activation_tokens, audit_log, credentials, signing_packages
from tests.conftest import PASSWORD, cli_env, have
from tests.signing.holders import (
    ECDSA,
    assert_signed_by,
    authorize,
    authorize_and_sign,
    digests,
    new_holder,
    no_otp_application,
    sign,
    verifies,
)

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SERVER_LABELS = ("ca-", "signserver-")


def token_objects(state_dir, config) -> list[tuple[str, str]]:
    """Every object on the token as another process sees it with the user PIN: (kind, label)."""
    listed = subprocess.run(
        ["pkcs11-tool", "--module", MODULE, "--token-label", config.hsm.token_label, "--login",
         "--pin", config.hsm.user_pin(environ={}).reveal(), "--list-objects"],
        env=cli_env(state_dir), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    objects, kind = [], None
    for line in listed.stdout.splitlines():
        if line and not line.startswith(" "):
            kind = line.split(";")[0].strip()
        found = re.match(r"\s+label:\s*(.*)$", line)
        if found:
            objects.append((kind, found.group(1).strip()))
    return objects


def open_entry(service, token: str):
    return service.keys.session.cache[("open", activation.token_hash(token))]


@pytest.fixture
def two_holders(fresh_service):
    service = fresh_service
    alice, bob = new_holder(service), new_holder(service)
    return service, no_otp_application(service), alice, bob


# --- what the token holds ---------------------------------------------------------------

@pytest.mark.skipif(not have("pkcs11-tool"), reason="pkcs11-tool (Debian package opensc) is not installed")
def test_the_token_holds_no_holder_key_at_rest_nor_while_one_is_open(state_dir, config, fresh_service):
    service = fresh_service
    app = no_otp_application(service)
    before = Counter(token_objects(state_dir, config))
    alice, bob = new_holder(service), new_holder(service)
    carol = new_holder(service, algorithm=KeyAlgorithm.RSA_2048)
    for holder in (alice, bob, carol):
        assert holder.credential.is_package
    at_rest = Counter(token_objects(state_dir, config)) - before
    assert all(label.startswith(SERVER_LABELS) for _, label in at_rest), at_rest
    wanted = digests("page 1", "page 2", "page 3")
    authorization = authorize(service, app, alice.account.username, alice.credential.id, wanted)
    sign(service, app, alice.credential.id, authorization.token, wanted[:1])
    assert service.package_keys.open_count() >= 1  # the token still allows two: the key stays open

    during = token_objects(state_dir, config)
    new = Counter(during) - before
    assert all(label.startswith(SERVER_LABELS) for _, label in new), new
    names = (alice.account.username, bob.account.username, carol.account.username)
    assert not [o for o in during if any(n in o[1] for n in names)], during

    sign(service, app, alice.credential.id, authorization.token, wanted[1:])
    assert ("open", activation.token_hash(authorization.token)) not in service.keys.session.cache


def test_an_open_key_is_a_sensitive_unextractable_session_object(two_holders):
    service, app, alice, _ = two_holders
    wanted = digests("one", "two")
    authorization = authorize(service, app, alice.account.username, alice.credential.id, wanted)
    sign(service, app, alice.credential.id, authorization.token, wanted[:1])
    entry = open_entry(service, authorization.token)

    def attributes(_session):
        return {name: bool(entry.key[attribute]) for name, attribute in (
            ("sensitive", Attribute.SENSITIVE), ("extractable", Attribute.EXTRACTABLE),
            ("token", Attribute.TOKEN), ("never_extractable", Attribute.NEVER_EXTRACTABLE),
            ("sign", Attribute.SIGN), ("decrypt", Attribute.DECRYPT), ("unwrap", Attribute.UNWRAP))}

    assert service.keys.session.run(attributes, "read the open key") == {
        "sensitive": True, "extractable": False, "token": False, "never_extractable": False,
        "sign": True, "decrypt": False, "unwrap": False}

    with service.database.read() as conn:
        master = service.packages.active_master(conn)

    def wrap_under_master(session):
        return service.master_keys.handle(session, master).wrap_key(entry.key, mechanism=Mechanism.AES_KEY_WRAP_PAD)

    with pytest.raises(SignServerError) as refused:
        service.keys.session.run(wrap_under_master, "wrap the open key")
    assert isinstance(refused.value.__cause__, KeyUnextractable)
    # Still the holder's key, and still signing what the token allows.
    signatures = sign(service, app, alice.credential.id, authorization.token, wanted[1:])
    assert_signed_by(service.packages.public_key_der(alice.credential.key_id), signatures, wanted[1:])


# --- the database and the token's PIN, without the holder ------------------------------

def package_row(service, key_id: str):
    with service.database.read() as conn:
        return conn.execute(select(signing_packages).where(signing_packages.c.key_id == key_id)).first()


def seal_key_of(service, holder, password: str = PASSWORD) -> bytes:
    """A holder's seal key, as that holder's own password opens it (a colluding holder's, say)."""
    return service.accounts._authenticator.authenticate_holder(holder.account.username, Secret(password), None,
                                                               False, "test").seal_key


def test_the_sealed_private_key_opens_with_nothing_but_the_holders_seal_key(two_holders):
    service, app, alice, bob = two_holders
    row = package_row(service, alice.credential.key_id)
    context = package_context(row.key_id, alice.account.username)
    bob_seal = seal_key_of(service, bob)
    authorization = authorize(service, app, bob.account.username, bob.credential.id, digests("b"))
    for wrong in (bob_seal, holder_seal.new_seal_key()[0], bytes(32), holder_seal.token_key(authorization.token)):
        with pytest.raises(DataCorrupted):
            holder_seal.open_sealed(wrong, row.sealed_private_key, context)
    for wrong_key in (holder_seal.token_key(authorization.token), bytes(32)):
        with pytest.raises(DataCorrupted):
            holder_seal.unlock(wrong_key, row.sealed_private_key[32:], context)
    with service.database.read() as conn, pytest.raises(CredentialUnusable):
        service.packages.open(conn, row.key_id, alice.account.username, bob_seal)
    # The holder's own seal key opens it (so the refusals above are about the key).
    assert holder_seal.open_sealed(seal_key_of(service, alice), row.sealed_private_key, context)


def test_another_holders_token_neither_spends_nor_signs_for_the_holder(two_holders):
    service, app, alice, bob = two_holders
    wanted = digests("contract")
    bob_token = authorize(service, app, bob.account.username, bob.credential.id, wanted).token
    with pytest.raises(ActivationRefused, match="another credential"):
        sign(service, app, alice.credential.id, bob_token, wanted)
    assert service.package_keys.open_count() == 0
    alice_public = service.packages.public_key_der(alice.credential.key_id)

    # The lower steps given Bob's token for Alice's credential: what Bob's token carries is not
    # read for Alice's credential, and the signing step with it opens nothing of Alice's.
    alice_credential = service.credentials.credential(app, alice.credential.id)
    bob_hash = activation.token_hash(bob_token)
    with service.database.read() as conn, pytest.raises(CredentialUnusable):
        service.packages.key_to_open(conn, alice_credential.id, alice_credential.key_id, bob_token, bob_hash)
    try:
        produced = service.signer.sign_spent(Spent(alice_credential, bob_hash, None, len(wanted)), wanted, ECDSA)
    except (CredentialUnusable, DataCorrupted):
        produced = []
    assert not any(verifies(alice_public, s, d) for s, d in zip(produced, wanted))
    # Bob's token still signs for Bob (nothing of it was spent by the refusals).
    assert_signed_by(service.packages.public_key_der(bob.credential.key_id),
                     sign(service, app, bob.credential.id, bob_token, wanted), wanted)


@pytest.mark.parametrize("copy", ["same key id", "another key id", "sealed key only"])
def test_a_package_copied_under_another_account_does_not_open(two_holders, copy):
    service, app, alice, bob = two_holders
    row = package_row(service, alice.credential.key_id)
    target = bob.credential.id
    with service.database.transaction() as conn:
        if copy == "same key id":  # Alice's credential, package and all, moved to Bob's account
            target = alice.credential.id
            conn.execute(update(credentials).where(credentials.c.id == alice.credential.id)
                         .values(account_id=bob.account.id))
        elif copy == "another key id":
            copied = uuid.uuid4().hex
            conn.execute(insert(signing_packages).values({**row._mapping, "key_id": copied}))
            conn.execute(update(credentials).where(credentials.c.id == bob.credential.id).values(key_id=copied))
        else:
            conn.execute(update(signing_packages).where(signing_packages.c.key_id == bob.credential.key_id)
                         .values(sealed_private_key=row.sealed_private_key, public_key=row.public_key,
                                 wrapped_package_key=row.wrapped_package_key))
    with pytest.raises(CredentialUnusable):
        authorize_and_sign(service, app, bob.account.username, target, digests("x"))
    with service.database.read() as conn:
        issued = conn.execute(select(activation_tokens.c.token_hash)
                              .where(activation_tokens.c.credential_id == target)).all()
    assert issued == []  # no token came out of it
    if copy == "same key id":
        return
    # Alice's own package is untouched and still signs for her.
    wanted = digests("hers")
    assert_signed_by(row.public_key, authorize_and_sign(service, app, alice.account.username, alice.credential.id,
                                                        wanted), wanted)


def test_unwrapping_the_package_key_does_not_open_the_still_sealed_private_key(two_holders, clock):
    service, _, alice, _ = two_holders
    row = package_row(service, alice.credential.key_id)
    sealed = row.sealed_private_key
    # What an attacker with the database and the PIN might hand the token as "the wrapped key":
    # the sealed value, and the parts of it (ephemeral key, nonce, ciphertext and tag).
    candidates = {"whole": sealed, "without the ephemeral key": sealed[32:],
                  "the ciphertext": sealed[32 + 1 + 12:], "without the tag": sealed[32 + 1 + 12:-16]}
    for what, blob in candidates.items():
        to_open = KeyToOpen(handle_id=f"attack-{what}", algorithm=KeyAlgorithm(row.algorithm), wrapped_private=blob,
                            wrapped_package_key=row.wrapped_package_key, master_label=row.master_label,
                            mechanism=row.mechanism, expires_at=clock.now().replace(year=2100))
        with pytest.raises(DataCorrupted):
            service.package_keys.sign(to_open.handle_id, digests("forged"), ECDSA, clock.now(), to_open, last=True)
    assert service.package_keys.open_count() == 0
    # Re-wrapping (which unwraps the package key inside the token) hands out only the key wrapped
    # again (AES key wrap is deterministic: the very same value), never the key itself.
    rewrapped = service.package_keys.rewrap(row.wrapped_package_key, row.mechanism, row.master_label,
                                            row.master_label)
    assert rewrapped == row.wrapped_package_key


def test_the_audit_holds_no_secret(fresh_service, clock):
    service = fresh_service
    created = new_holder(service)
    app = no_otp_application(service)
    wanted = digests("audited")
    authorization = authorize(service, app, created.account.username, created.credential.id, wanted)
    sign(service, app, created.credential.id, authorization.token, wanted)
    code = service.accounts.unlock_with_recovery_code(created.account.username, Secret(created.recovery_code),
                                                      Secret("Recovered-pass-7"), "operator:test")
    reset_code = service.accounts.reset_password(created.account.username, Secret("Reset-pass-2026"),
                                                 "operator:test")
    seal_key = seal_key_of(service, created, "Reset-pass-2026")
    with service.database.read() as conn:
        records = [f"{r.event} {r.actor} {r.subject} {r.detail}" for r in conn.execute(select(audit_log))]
        package = conn.execute(select(signing_packages)).first()
    text = "\n".join(records)
    assert "account.password_reset" in text and "authorization.issued" in text
    seed = created.otp_uri.split("secret=")[1].split("&")[0]
    secrets = [PASSWORD, "Recovered-pass-7", "Reset-pass-2026", created.recovery_code, code, reset_code,
               created.recovery_code.replace("-", ""), seed, authorization.token, seal_key.hex(),
               package.sealed_private_key.hex(), package.wrapped_package_key.hex()]
    for secret in secrets:
        assert secret and secret not in text, secret
    for record in records:
        json.loads(record.split(" ", 3)[3])  # details stay structured data
