"""Signing across a master key rotation: a call between spending its token and signing, and a
token issued before the rotation, still sign once the package moved under the new key and the old
key was destroyed; a package this token lacks the master key of is refused as a server's
momentary fault, never naming keys, tokens or the key ceremony.

An activation token carries the holder's private key wrapped by the package key alone (sealed
under the token), never anything a master key wraps: what a master key wraps is read from the
package when the token is spent, and re-wrapping changes only that.

Rotations destroy master keys: these tests run on the rotation tests' own token.
"""

from __future__ import annotations

import datetime
import hashlib
import logging

import grpc
import pytest

from signserver.accounts import otp
from signserver.accounts.master_rotation import MasterRotation
from signserver.errors import HsmUnavailable
from signserver.grpc_api.errors import status_for
from signserver.hsm.algorithms import HashAlgorithm
from signserver.secret import Secret
from signserver.signing.hash_signer import MASTER_KEY_MISSING
from tests.accounts.test_master_rotation import (  # noqa: F401 (fixtures)
    ECDSA,
    Holders,
    master_of,
    service,
    states,
    token,
)
from tests.conftest import PASSWORD
from tests.signing.holders import assert_signed_by

GRACE = datetime.timedelta(seconds=60)


def authorize(holders: Holders, holder, wanted: list[bytes]) -> str:
    created, seed = holder
    holders.clock.advance(seconds=30)  # a fresh OTP step: a code is accepted once
    return holders.service.signer.authorize(holders.app, created.account.username, Secret(PASSWORD),
                                            otp.code_at(seed, holders.clock.now()), created.credential.id,
                                            HashAlgorithm.SHA256, wanted).token


def spent_of(holders: Holders, holder, text: bytes):
    """A call between its two steps: ``text``'s digest authorised, and the token spent on it."""
    wanted = [hashlib.sha256(text).digest()]
    token = authorize(holders, holder, wanted)
    return holders.service.signer.spend(holders.app, holder[0].credential.id, Secret(token), HashAlgorithm.SHA256,
                                        wanted), wanted


def rotate_and_retire(service, clock, old: str) -> None:
    """A rotation, the re-wrap pass, and the retirement of ``old`` once the grace is over: ``old``
    is destroyed on the token."""
    rotation = MasterRotation(service.database, service.packages, service.master_keys, service.audit, clock,
                              retire_grace=GRACE)
    rotation.rotate("operator:test")
    rotation.rewrap_pass()
    clock.advance(seconds=GRACE.total_seconds() + 1)
    assert rotation.retire_unused("operator:test") == [old]
    assert not service.master_keys.present(old)


def test_a_call_between_spending_and_signing_signs_once_its_package_moved_and_the_old_key_went(service, clock):
    holders = Holders(service, clock)
    holder = holders.enrol()
    created = holder[0]
    old = master_of(service, holder)
    spent, wanted = spent_of(holders, holder, b"in flight")
    assert spent.to_open is not None and spent.to_open.master_label == old  # as read when it was spent

    rotate_and_retire(service, clock, old)  # while the call is between its two steps

    signatures = service.signer.sign_spent(spent, wanted, ECDSA)
    assert_signed_by(service.packages.public_key_der(created.credential.key_id), signatures, wanted)


def test_a_token_issued_under_the_old_master_key_signs_after_the_rotation_until_it_is_spent(service, clock):
    holders = Holders(service, clock)
    holder = holders.enrol()
    created = holder[0]
    old = master_of(service, holder)
    wanted = [hashlib.sha256(text).digest() for text in (b"before", b"after")]
    token = authorize(holders, holder, wanted)
    public = service.packages.public_key_der(created.credential.key_id)
    before = service.signer.sign_hashes(holders.app, created.credential.id, Secret(token), ECDSA, wanted[:1])
    assert_signed_by(public, before, wanted[:1])

    rotate_and_retire(service, clock, old)
    service.keys.session.close()  # the key this process opened for the token is gone: opened again

    after = service.signer.sign_hashes(holders.app, created.credential.id, Secret(token), ECDSA, wanted[1:])
    assert_signed_by(public, after, wanted[1:])
    assert master_of(service, holder) != old


def test_a_package_whose_master_key_this_token_lacks_is_refused_as_unavailable(service, clock, caplog):
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)
    spent, wanted = spent_of(holders, holder, b"lost")
    service.master_keys.destroy(old)  # lost on this token, the package still under it: nothing to move to

    with caplog.at_level(logging.WARNING), pytest.raises(HsmUnavailable) as refused:
        service.signer.sign_spent(spent, wanted, ECDSA)

    assert str(refused.value) == MASTER_KEY_MISSING
    assert status_for(refused.value) is grpc.StatusCode.UNAVAILABLE
    assert old not in MASTER_KEY_MISSING and "ceremony" not in MASTER_KEY_MISSING
    assert any(old in r.getMessage() and "key ceremony" in r.getMessage() for r in caplog.records)  # the operator's
    assert states(service)[old] == "active"
