"""Authorize and SignHash: every activation-token rule, and one holder never reaching another's key."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from signserver.accounts import otp
from signserver.errors import ActivationRefused, AuthenticationFailed, InvalidArgument, NotFound, PermissionDenied
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol
from tests.hsm.test_keystore import verify

ECDSA = SignatureAlgorithm.ECDSA_SHA256


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@pytest.fixture
def setup(fresh_service, clock):
    alice, alice_seed = enrol(fresh_service)
    bob, bob_seed = enrol(fresh_service)
    app, _ = fresh_service.applications.create("test-app")
    return fresh_service, app, (alice, alice_seed), (bob, bob_seed)


def authorize(service, app, holder, clock, digests, credential=None):
    created, seed = holder
    return service.signer.authorize(app, created.account.username, Secret(PASSWORD), otp.code_at(seed, clock.now()),
                                    created.credential.id if credential is None else credential, HashAlgorithm.SHA256,
                                    digests)


def test_authorize_then_sign_a_batch(setup, clock):
    service, app, alice, _ = setup
    digests = [digest(f"page {i}") for i in range(50)]
    token = authorize(service, app, alice, clock, digests)
    signatures = service.signer.sign_hashes(app, alice[0].credential.id, Secret(token.token), ECDSA, digests)
    public = load_der_public_key(service.packages.public_key_der(alice[0].credential.key_id))
    for i, signature in enumerate(signatures):
        verify(public, signature, ECDSA, f"page {i}".encode())


def test_token_is_single_use(setup, clock):
    service, app, alice, _ = setup
    token = authorize(service, app, alice, clock, [digest("a")])
    sign = service.signer.sign_hashes
    sign(app, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])
    with pytest.raises(ActivationRefused, match="has been used"):
        sign(app, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])


def test_token_expires(setup, clock):
    service, app, alice, _ = setup
    token = authorize(service, app, alice, clock, [digest("a")])
    clock.advance(minutes=5)
    with pytest.raises(ActivationRefused, match="expired"):
        service.signer.sign_hashes(app, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])


def test_token_is_bound_to_its_digests_and_count(setup, clock):
    service, app, alice, _ = setup
    token = authorize(service, app, alice, clock, [digest("a"), digest("b")])
    sign = service.signer.sign_hashes
    credential = alice[0].credential.id
    with pytest.raises(ActivationRefused, match="not authorised"):
        sign(app, credential, Secret(token.token), ECDSA, [digest("c")])
    with pytest.raises(ActivationRefused, match="allows 2 more"):
        sign(app, credential, Secret(token.token), ECDSA, [digest("a"), digest("b"), digest("c")])
    sign(app, credential, Secret(token.token), ECDSA, [digest("a")])  # nothing was spent by the refusals
    with pytest.raises(ActivationRefused, match="already signed"):
        sign(app, credential, Secret(token.token), ECDSA, [digest("a")])
    sign(app, credential, Secret(token.token), ECDSA, [digest("b")])


def test_token_is_bound_to_its_credential(setup, clock):
    service, app, alice, _ = setup
    second = service.keys.generate(alice[0].credential.key_algorithm, f"second-{alice[0].account.username}")
    from signserver.accounts.repository import insert_credential

    with service.database.transaction() as conn:
        other = insert_credential(conn, alice[0].account.id, second.key_id, second.algorithm, "second", clock.now())
    token = authorize(service, app, alice, clock, [digest("a")])
    with pytest.raises(ActivationRefused, match="another credential"):
        service.signer.sign_hashes(app, other, Secret(token.token), ECDSA, [digest("a")])


def test_unknown_token_is_refused(setup):
    service, app, alice, _ = setup
    with pytest.raises(ActivationRefused, match="not valid"):
        service.signer.sign_hashes(app, alice[0].credential.id, Secret("made-up"), ECDSA, [digest("a")])


def test_password_change_revokes_outstanding_tokens(setup, clock):
    service, app, alice, _ = setup
    token = authorize(service, app, alice, clock, [digest("a")])
    clock.advance(seconds=otp.STEP_SECONDS)
    service.accounts.change_password(alice[0].account.username, Secret(PASSWORD), Secret("Another-pass-1"),
                                     Secret("Another-pass-1"), otp.code_at(alice[1], clock.now()), True, "t")
    with pytest.raises(ActivationRefused, match="revoked"):
        service.signer.sign_hashes(app, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])


def test_alice_cannot_sign_with_bobs_credential(setup, clock):
    service, app, alice, bob = setup
    # Alice's factors with Bob's credential: no token, refused like a wrong factor.
    with pytest.raises(AuthenticationFailed):
        authorize(service, app, alice, clock, [digest("a")], credential=bob[0].credential.id)
    # Alice's token presented for Bob's credential: refused.
    clock.advance(seconds=otp.STEP_SECONDS)
    token = authorize(service, app, alice, clock, [digest("a")])
    with pytest.raises(ActivationRefused):
        service.signer.sign_hashes(app, bob[0].credential.id, Secret(token.token), ECDSA, [digest("a")])
    # Bob's factors are needed for Bob's key.
    with pytest.raises(AuthenticationFailed):
        service.signer.authorize(app, bob[0].account.username, Secret(PASSWORD), otp.code_at(alice[1], clock.now()),
                                 bob[0].credential.id, HashAlgorithm.SHA256, [digest("a")])


def test_application_policy_limits_accounts(setup, clock):
    service, _, alice, bob = setup
    narrow, _ = service.applications.create("narrow-app", accounts_served=(bob[0].account.username,))
    with pytest.raises(PermissionDenied):
        authorize(service, narrow, alice, clock, [digest("a")])
    with pytest.raises(NotFound):
        service.credentials.credential_info(narrow, alice[0].credential.id)
    assert service.credentials.credential_info(narrow, bob[0].credential.id).credential.username == bob[0].account.username


def test_token_is_bound_to_the_application(setup, clock):
    service, app, alice, _ = setup
    other, _ = service.applications.create("other-app")
    token = authorize(service, app, alice, clock, [digest("a")])
    with pytest.raises(ActivationRefused, match="another application"):
        service.signer.sign_hashes(other, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])


@pytest.mark.parametrize("digests,message", [
    ([], "at least one digest"),
    ([b"short"], "has 5 bytes"),
    ([bytes(32)] * 2, "appears twice"),
    ([hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(101)], "at most 100"),
])
def test_bad_digests_are_invalid(setup, clock, digests, message):
    service, app, alice, _ = setup
    with pytest.raises(InvalidArgument, match=message):
        authorize(service, app, alice, clock, digests)
    assert service.accounts.get(alice[0].account.username).failed_attempts == 0  # nothing was counted


def test_token_is_bound_to_its_digest_algorithm(setup, clock):
    service, app, alice, _ = setup
    created, seed = alice
    token = service.signer.authorize(app, created.account.username, Secret(PASSWORD), otp.code_at(seed, clock.now()),
                                     created.credential.id, HashAlgorithm.SHA384, [hashlib.sha384(b"a").digest()])
    with pytest.raises(ActivationRefused, match="is for sha384 digests"):
        service.signer.sign_hashes(app, created.credential.id, Secret(token.token), ECDSA, [digest("a")])


def test_an_unusable_credential_is_unusable_only_to_applications_that_serve_its_account(setup, clock):
    from sqlalchemy import update

    from signserver.errors import CredentialUnusable
    from signserver.store.schema import credentials

    service, app, alice, bob = setup
    narrow, _ = service.applications.create("narrow-app", accounts_served=(bob[0].account.username,))
    token = authorize(service, app, alice, clock, [digest("a")])
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == alice[0].credential.id).values(status="disabled"))
    with pytest.raises(CredentialUnusable, match="is disabled"):
        service.signer.sign_hashes(app, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])
    with pytest.raises(NotFound):
        service.signer.sign_hashes(narrow, alice[0].credential.id, Secret(token.token), ECDSA, [digest("a")])


def test_an_empty_credential_id_means_the_holders_signing_credential(setup, clock):
    from sqlalchemy import update

    from signserver.errors import CredentialUnusable
    from signserver.store.schema import credentials

    service, app, alice, _ = setup
    token = authorize(service, app, alice, clock, [digest("a")], credential="")
    assert token.credential_id == alice[0].credential.id
    service.signer.sign_hashes(app, token.credential_id, Secret(token.token), ECDSA, [digest("a")])

    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == alice[0].credential.id).values(status="disabled"))
    clock.advance(seconds=otp.STEP_SECONDS)
    name, code = alice[0].account.username, otp.code_at(alice[1], clock.now())
    with pytest.raises(AuthenticationFailed):  # without the factors, nothing about the credentials
        service.signer.authorize(app, name, Secret("Wrong-password-1"), code, "", HashAlgorithm.SHA256, [digest("b")])
    with pytest.raises(CredentialUnusable, match="no active credential"):
        service.signer.authorize(app, name, Secret(PASSWORD), code, "", HashAlgorithm.SHA256, [digest("b")])
