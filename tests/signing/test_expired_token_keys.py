"""The background round erases the key every expired activation token still carries, however long
ago it expired: one whose round failed, or that expired while no process ran, is erased by the
next round."""

from __future__ import annotations

import pytest

from signserver.errors import SignServerError
from signserver.signing import hash_signer
from signserver.signing.activation import still_sealed_expired
from tests.ca.test_certificate_pages import query_plan
from tests.refused_writes import writes_refused
from tests.signing.holders import authorize, digests, new_holder, no_otp_application
from tests.signing.test_package_tokens import opens


def unsigned_token(service, created, app, text: str) -> str:
    """A token for two digests, none signed: it carries the holder's key until it expires."""
    return authorize(service, app, created.account.username, created.credential.id, digests(text, "b")).token


def test_a_failed_round_leaves_the_expired_keys_to_the_next(fresh_service, clock):
    service = fresh_service
    created = new_holder(service)
    token = unsigned_token(service, created, no_otp_application(service), "a")
    service.signer.forget_expired_tokens()
    clock.advance(seconds=service.signer.token_lifetime.total_seconds() + 1)

    # The database refuses the round's writes (a full disk, say): the round fails.
    with writes_refused(service.database, "UPDATE", "activation_tokens"):
        with pytest.raises(SignServerError):
            service.signer.forget_expired_tokens()
    assert opens(service, token)

    clock.advance(seconds=1)
    assert service.signer.forget_expired_tokens() == 1
    assert not opens(service, token)


def test_a_processs_first_round_erases_keys_that_expired_long_before(fresh_service, clock):
    service = fresh_service
    created = new_holder(service)
    token = unsigned_token(service, created, no_otp_application(service), "a")
    clock.advance(days=3)  # no process ran meanwhile

    assert service.signer.forget_expired_tokens() == 1
    assert not opens(service, token)


def test_a_round_erases_every_expired_key_a_batch_at_a_time(fresh_service, clock, monkeypatch):
    service = fresh_service
    created = new_holder(service)
    app = no_otp_application(service)
    expiring = [unsigned_token(service, created, app, text) for text in ("a", "c", "d")]
    half = service.signer.token_lifetime.total_seconds() / 2
    clock.advance(seconds=half)
    live = unsigned_token(service, created, app, "e")
    clock.advance(seconds=half + 1)
    monkeypatch.setattr(hash_signer, "FORGET_BATCH", 2)

    assert service.signer.forget_expired_tokens() == 3
    assert not any(opens(service, token) for token in expiring)
    assert opens(service, live)


def test_the_round_reads_only_the_tokens_that_still_carry_a_key(fresh_service, clock):
    """Retention keeps a day of expired tokens, erased: the round finds the few still sealed through
    an index of those alone, not by reading every expired one."""
    with fresh_service.database.read() as conn:
        plan = query_plan(conn, still_sealed_expired(clock.now(), 500))
    assert "ix_activation_tokens_sealed_expiry" in plan, plan
