"""What an activation token carries lives only as long as the token may sign: a token seen once
(in a log, say) opens nothing once it is spent, revoked or expired, even with the database and the
token's PIN. And a revoked package stays destroyed whatever re-wraps it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update

from signserver.accounts import holder_seal
from signserver.errors import ActivationRefused, CredentialUnusable, UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm
from signserver.secret import Secret
from signserver.signing import activation
from signserver.store.schema import activation_tokens, audit_log, master_keys, signing_packages
from tests.conftest import PASSWORD
from tests.signing.holders import ECDSA, RSA, assert_signed_by, authorize, digests, new_holder, no_otp_application, sign


@pytest.fixture
def holder(fresh_service):
    created = new_holder(fresh_service)
    return fresh_service, no_otp_application(fresh_service), created


def sealed_key(service, token: str) -> bytes | None:
    with service.database.read() as conn:
        return conn.execute(select(activation_tokens.c.sealed_key).where(
            activation_tokens.c.token_hash == activation.token_hash(token))).scalar()


def opens(service, token: str) -> bool:
    """Whether the token's row still yields the wrapped private key to whoever has the token."""
    stored = sealed_key(service, token)
    if stored is None:
        return False
    holder_seal.unlock(holder_seal.token_key(token), stored, activation.token_hash(token).encode("ascii"))
    return True


def test_the_sealed_key_goes_with_the_last_digest(holder):
    service, app, created = holder
    wanted = digests("one", "two", "three")
    token = authorize(service, app, created.account.username, created.credential.id, wanted).token
    sign(service, app, created.credential.id, token, wanted[:2])
    assert opens(service, token)  # one digest left: still needed
    sign(service, app, created.credential.id, token, wanted[2:])
    assert not opens(service, token)


def test_a_refused_spend_erases_nothing(holder):
    service, app, created = holder
    wanted = digests("kept")
    token = authorize(service, app, created.account.username, created.credential.id, wanted).token
    with pytest.raises(ActivationRefused):
        sign(service, app, created.credential.id, token, digests("not authorised"))
    assert opens(service, token)
    sign(service, app, created.credential.id, token, wanted)


def unspent(service, token: str) -> int:
    with service.database.read() as conn:
        return conn.execute(select(activation_tokens.c.unspent).where(
            activation_tokens.c.token_hash == activation.token_hash(token))).scalar()


def test_concurrent_spendings_take_each_digest_once_and_count_every_one(holder):
    service, app, created = holder
    wanted = digests(*(f"page {i}" for i in range(10)))
    token = authorize(service, app, created.account.username, created.credential.id, wanted).token
    # Every digest asked for by two callers at once, each on its own connection: one signs it,
    # the other is refused; and the count goes down once per digest, whatever the interleaving.
    callers = [digest for digest in wanted for _ in range(2)]
    start = threading.Barrier(len(callers))
    outcomes: list[tuple[str, bytes]] = []

    def spend(digest: bytes) -> None:
        start.wait()
        try:
            sign(service, app, created.credential.id, token, [digest])
            outcomes.append(("signed", digest))
        except ActivationRefused:
            outcomes.append(("refused", digest))

    threads = [threading.Thread(target=spend, args=(digest,)) for digest in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(d for outcome, d in outcomes if outcome == "signed") == sorted(wanted)
    assert sorted(d for outcome, d in outcomes if outcome == "refused") == sorted(wanted)
    assert unspent(service, token) == 0
    assert not opens(service, token)  # erased with the last digest, whichever came last


def test_revoked_tokens_carry_nothing(holder):
    service, app, created = holder
    token = authorize(service, app, created.account.username, created.credential.id, digests("a", "b")).token
    service.accounts.change_password(created.account.username, Secret(PASSWORD), Secret("Another-pass-7"),
                                     Secret("Another-pass-7"), None, False, "test")
    assert not opens(service, token)


def test_expired_tokens_carry_nothing_after_the_background_round(holder, clock):
    service, app, created = holder
    token = authorize(service, app, created.account.username, created.credential.id, digests("late")).token
    service.signer.forget_expired_tokens()
    assert opens(service, token)  # not expired yet
    clock.advance(seconds=service.signer.token_lifetime.total_seconds() + 1)
    assert service.signer.forget_expired_tokens() == 1
    assert not opens(service, token)
    with pytest.raises((ActivationRefused, CredentialUnusable)):
        sign(service, app, created.credential.id, token, digests("late"))


def test_a_rewrap_does_not_bring_back_a_revoked_package(holder):
    service, app, created = holder
    key_id = created.credential.key_id
    new_master = service.master_rotation.rotate("operator:test")
    with service.database.read() as conn:
        assert conn.execute(select(master_keys.c.state).where(master_keys.c.label == new_master)).scalar() == "active"
    # A re-wrap reads the package, and the package is destroyed (revocation) before it writes.
    read = service.packages._keys.rewrap

    def destroyed_meanwhile(*args, **kwargs):
        rewrapped = read(*args, **kwargs)
        with service.database.transaction() as conn:
            service.packages.destroy(conn, key_id)
        return rewrapped

    service.packages._keys.rewrap = destroyed_meanwhile
    try:
        assert not service.packages.rewrap_if_stale(key_id)
    finally:
        service.packages._keys.rewrap = read
    with service.database.read() as conn:
        row = conn.execute(select(signing_packages).where(signing_packages.c.key_id == key_id)).one()
    assert row.wrapped_package_key is None and row.sealed_private_key is None


def signature_records(service, event: str) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(audit_log).where(audit_log.c.event == event)).scalar()


def test_a_token_whose_package_was_destroyed_spends_nothing(holder):
    service, app, created = holder
    wanted = digests("after the package went")
    token = authorize(service, app, created.account.username, created.credential.id, wanted).token
    with service.database.transaction() as conn:
        service.packages.destroy(conn, created.credential.key_id)  # as a revocation does
    with pytest.raises(CredentialUnusable, match="not available"):
        sign(service, app, created.credential.id, token, wanted)
    # Refused before anything was written: the digest is unspent, no signature recorded.
    assert unspent(service, token) == 1
    assert signature_records(service, "signature") == 0


def test_a_token_whose_sealed_key_does_not_open_signs_nothing_and_says_so(holder):
    service, app, created = holder
    first, second = digests("one"), digests("two")
    token = authorize(service, app, created.account.username, created.credential.id, first).token
    other = authorize(service, app, created.account.username, created.credential.id, second).token
    with service.database.transaction() as conn:  # the database altered: another token's sealed key
        conn.execute(update(activation_tokens).where(activation_tokens.c.token_hash == activation.token_hash(token))
                     .values(sealed_key=sealed_key(service, other)))
    for _ in range(2):
        with pytest.raises((CredentialUnusable, ActivationRefused)):
            sign(service, app, created.credential.id, token, first)
    # Nothing signed: any signature record of it is followed by its failure (PostgreSQL commits the
    # spending before the key is opened; SQLite rolls it back).
    assert signature_records(service, "signature") == signature_records(service, "signature.failed")
    sign(service, app, created.credential.id, other, second)  # the other token is untouched


def test_a_key_open_in_a_process_stays_open_for_every_call_that_spent_its_token_there(holder):
    """Three calls of one process spend one token's three digests and sign in another order than
    they spent: each signs, and the key closes after the last signature, not before."""
    service, app, created = holder
    signer, credential = service.signer, created.credential.id
    wanted = digests("first", "second", "third")
    token = Secret(authorize(service, app, created.account.username, credential, wanted).token)

    def spend(digest: bytes):
        return signer.spend(app, credential, token, HashAlgorithm.SHA256, [digest])

    first, second = spend(wanted[0]), spend(wanted[1])  # neither finds the key open
    signatures = {1: signer.sign_spent(second, wanted[1:2], ECDSA)}  # opens it
    third = spend(wanted[2])  # finds it open
    signatures[0] = signer.sign_spent(first, wanted[:1], ECDSA)
    signatures[2] = signer.sign_spent(third, wanted[2:], ECDSA)
    assert_signed_by(service.packages.public_key_der(created.credential.key_id),
                     [signatures[i][0] for i in range(3)], wanted)
    assert service.package_keys.open_count() == 0  # the token has nothing left to sign


def test_a_call_that_spent_before_its_token_expired_still_signs_after(holder, clock):
    service, app, created = holder
    signer, credential = service.signer, created.credential.id
    wanted = digests("before", "at the edge")
    token = Secret(authorize(service, app, created.account.username, credential, wanted).token)
    sign(service, app, credential, token.reveal(), wanted[:1])  # the key opens, and stays open for the other
    spent = signer.spend(app, credential, token, HashAlgorithm.SHA256, wanted[1:])  # just in time
    clock.advance(seconds=signer.token_lifetime.total_seconds() + 1)
    assert_signed_by(service.packages.public_key_der(created.credential.key_id),
                     signer.sign_spent(spent, wanted[1:], ECDSA), wanted[1:])
    assert service.package_keys.open_count() == 0


def test_a_key_whose_last_signature_failed_closes_at_the_next_signature(holder):
    service, app, created = holder
    signer, credential = service.signer, created.credential.id
    wanted = digests("refused")
    token = Secret(authorize(service, app, created.account.username, credential, wanted).token)
    spent = signer.spend(app, credential, token, HashAlgorithm.SHA256, wanted)
    with pytest.raises(UnsupportedAlgorithm):
        signer.sign_spent(spent, wanted, RSA)  # opened, then refused: an RSA signature with a P-256 key
    assert service.package_keys.open_count() == 1
    other = digests("another")
    sign(service, app, credential, authorize(service, app, created.account.username, credential, other).token, other)
    assert service.package_keys.open_count() == 0
