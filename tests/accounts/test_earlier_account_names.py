"""An account named under the first rule for account names (letters, digits, '.', '-', '_' and
'@'), made as that version made it, keeps working: Authorize and signing, a password change, a
new recovery code, an unlock, a new OTP seed. New accounts follow the current rule."""

from __future__ import annotations

import hashlib
import re

import pytest

from signserver.accounts import manager, otp
from signserver.errors import InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol, seed_of

EARLIER_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$")
NAME = "ho_ka@dsaj.gov.mo"


@pytest.fixture
def earlier(fresh_service, monkeypatch):
    """The account as the version of the earlier rule made it; returns it and its OTP seed."""
    with monkeypatch.context() as rule:
        rule.setattr(manager, "USERNAME", EARLIER_RULE)
        return enrol(fresh_service, NAME, emails=("ho.ka@dsaj.gov.mo",))


def authorize_and_sign(service, app, credential_id: str, seed: str, clock, password: str = PASSWORD) -> list[bytes]:
    digests = [hashlib.sha256(b"page").digest()]
    token = service.signer.authorize(app, NAME, Secret(password), otp.code_at(seed, clock.now()), credential_id,
                                     HashAlgorithm.SHA256, digests)
    return service.signer.sign_hashes(app, credential_id, Secret(token.token), SignatureAlgorithm.ECDSA_SHA256,
                                      digests)


def test_an_earlier_name_authorizes_and_signs(fresh_service, earlier, clock):
    created, seed = earlier
    app, _ = fresh_service.applications.create("earlier-names-app")
    assert len(authorize_and_sign(fresh_service, app, created.credential.id, seed, clock)) == 1


def test_an_earlier_name_changes_its_password_and_replaces_its_recovery_code(fresh_service, earlier, clock):
    created, seed = earlier
    new = "Another-Pass-2027"
    fresh_service.accounts.change_password(NAME, Secret(PASSWORD), Secret(new), Secret(new),
                                           otp.code_at(seed, clock.now()), True, "holder")
    clock.advance(seconds=30)  # a one-time password is good once
    code = fresh_service.accounts.replace_recovery_code(NAME, Secret(new), otp.code_at(seed, clock.now()), True,
                                                        "holder")
    fresh_service.accounts.unlock_with_recovery_code(NAME, Secret(code), Secret("Third-Pass-2028"), "operator:test")
    app, _ = fresh_service.applications.create("earlier-names-app")
    clock.advance(seconds=30)
    assert len(authorize_and_sign(fresh_service, app, created.credential.id, seed, clock, "Third-Pass-2028")) == 1


def test_an_earlier_name_gets_a_new_otp_seed(fresh_service, earlier, clock):
    created, _ = earlier
    seed = seed_of(fresh_service.accounts.reset_otp(NAME, "operator:test"))
    app, _ = fresh_service.applications.create("earlier-names-app")
    assert len(authorize_and_sign(fresh_service, app, created.credential.id, seed, clock)) == 1


def test_a_new_account_may_not_take_an_earlier_rule_name(fresh_service):
    with pytest.raises(InvalidArgument, match="account name") as refused:
        enrol(fresh_service, "leong_s@ipim.gov.mo")
    assert refused.value.field == "account"
