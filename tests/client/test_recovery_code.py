"""ReplaceRecoveryCode, through the client against a real server and token: a holder who gives
the account's factors gets a new recovery code, which unlocks the account keeping its signing
data packages, while the earlier code stops working; a holder who lost the code an unlock made
(its answer never arrived), or chose none at enrolment, is no longer left without one."""

from __future__ import annotations

import hashlib
import uuid

import pyotp
import pytest
from sqlalchemy import func, select

from signserver.accounts.model import AccountKind
from signserver.accounts.repository import account_row
from signserver.ca.authority import CertificateRequest
from signserver.client import AuthenticationRefused
from signserver.errors import AuthenticationFailed
from signserver.secret import Secret
from signserver.store.schema import outbox
from tests.client.test_client import verify_ecdsa
from tests.conftest import PASSWORD, enrol

NEW_PASSWORD = "Unlocked-at-desk-7"
OPERATOR = "operator:test"


def holder(service, **fields):
    """A corporate holder with a cloud-signature certificate; returns the account and its OTP seed."""
    created, seed = enrol(service, f"rec{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                          organisation="Example Lda", **fields)
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    return created, seed


def recovery_hash(service, name: str) -> str:
    with service.database.read() as conn:
        return account_row(conn, name).recovery_code_hash


def told(service, created) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.recipient.in_(created.account.emails),
            outbox.c.subject.contains("Recovery code replaced"))).scalar()


def assert_signs(client, service, name: str, password: str) -> None:
    digest = hashlib.sha256(f"signed by {name}".encode()).digest()
    authorization = client.authorize(name, password, digests=[digest])
    [signature] = client.sign_hashes(authorization, [digest], "ecdsa-sha256")
    verify_ecdsa(client.credential_info(authorization.credential_id).public_key_der, signature, digest)


@pytest.mark.parametrize("recovery_by_code", [True, False], ids=["code chosen at enrolment", "none chosen"])
def test_a_new_code_unlocks_keeping_the_keys_and_the_earlier_code_no_longer_does(world, client, recovery_by_code):
    service = world.service
    created, _ = holder(service, recovery_by_code=recovery_by_code)
    name = created.account.username
    assert bool(created.recovery_code) is recovery_by_code

    code = client.replace_recovery_code(name, PASSWORD)

    assert code and code != created.recovery_code
    assert told(service, created) == len(created.account.emails)
    assert_signs(client, service, name, PASSWORD)  # the password and packages stay as they were
    if recovery_by_code:
        with pytest.raises(AuthenticationFailed):
            service.accounts.unlock_with_recovery_code(name, Secret(created.recovery_code), Secret(NEW_PASSWORD),
                                                       OPERATOR)
    # The holder forgot the password: the new code unlocks, and the keys made before still sign.
    service.accounts.unlock_with_recovery_code(name, Secret(code), Secret(NEW_PASSWORD), OPERATOR)
    assert_signs(client, service, name, NEW_PASSWORD)


def test_the_code_an_unlock_made_and_lost_is_replaced_with_the_new_password(world, client):
    service = world.service
    created, _ = holder(service)
    name = created.account.username
    service.accounts.unlock_with_recovery_code(name, Secret(created.recovery_code), Secret(NEW_PASSWORD),
                                               OPERATOR)  # its answer, the new code, lost on the way

    code = client.replace_recovery_code(name, NEW_PASSWORD)

    service.accounts.unlock_with_recovery_code(name, Secret(code), Secret("Second-desk-visit-8"), OPERATOR)
    assert_signs(client, service, name, "Second-desk-visit-8")


def test_wrong_factors_or_an_unknown_name_are_one_refusal_counted_and_change_nothing(world, client):
    service = world.service
    created, seed = holder(service)
    name = created.account.username
    before = recovery_hash(service, name)
    messages = set()
    with world.client(world.otp_api_key) as with_otp:
        for call in (lambda: client.replace_recovery_code(name, "Wrong-pass-123"),
                     lambda: client.replace_recovery_code(f"nobody-{uuid.uuid4().hex[:8]}", PASSWORD),
                     lambda: with_otp.replace_recovery_code(name, PASSWORD),  # the OTP missing
                     lambda: with_otp.replace_recovery_code(name, PASSWORD, otp="000000")):
            with pytest.raises(AuthenticationRefused) as refused:
                call()
            messages.add(refused.value.message)
        assert len(messages) == 1
        assert recovery_hash(service, name) == before and told(service, created) == 0
        assert service.accounts.get(name).failed_attempts == 3  # every wrong factor counted

        code = with_otp.replace_recovery_code(name, PASSWORD, otp=pyotp.TOTP(seed).now())
    assert code and recovery_hash(service, name) != before
