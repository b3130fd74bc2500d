"""An operator's unlock with the recovery code is written only over the account as the code was
checked against it: its password and seal key too, not only the code. A renewal's activation
with a new password, or the holder's password change, that commits while the unlock runs seals
the holder's packages to a seal key the unlock would replace without them; the unlock is refused
then, with nothing changed and the code not spent, and never leaves an active credential with a
valid certificate that nobody can open.

The competing change runs from inside the unlock, after its code was checked, before the
transaction that writes (see tests/accounts/test_factor_change_races.py)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest, HolderActivation
from signserver.errors import AuthenticationBusy
from signserver.secret import Secret
from signserver.store.schema import accounts
from tests.accounts.test_factor_change_races import manager_with
from tests.ca.test_reset_during_issuance import OPERATOR, key_id_of, service  # noqa: F401 - the fixture
from tests.conftest import PASSWORD, enrol
from tests.signing.holders import CLOUD_SIGNATURE, assert_signed_by, authorize_and_sign, digests, no_otp_application

ACTIVATION_PASSWORD = "Activation-pass-9"
UNLOCKED_PASSWORD = "Unlocked-pass-7"


def recovery_code_hash(service, name: str) -> str:
    with service.database.read() as conn:
        return conn.execute(select(accounts.c.recovery_code_hash).where(accounts.c.username == name)).scalar()


def signs(service, name: str, credential_id: str, password: str) -> None:
    wanted = digests("after the unlock was refused")
    signatures = authorize_and_sign(service, no_otp_application(service), name, credential_id, wanted, password)
    assert_signed_by(service.packages.public_key_der(key_id_of(service, credential_id)), signatures, wanted)


def test_an_unlock_that_races_a_renewal_with_a_new_password_is_refused_and_the_renewed_key_signs(service):
    created, _ = enrol(service, f"race{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                       organisation="Example Lda")
    name = created.account.username
    first = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    service.ca.revoke(first.serial, "superseded", OPERATOR)  # no valid certificate: a new password may be set
    code_hash = recovery_code_hash(service, name)
    renewed = {}

    def renewal_with_a_new_password():  # the holder's online activation, as the RA sends it
        renewed["issued"] = service.ca.renew(first.serial, OPERATOR, activation=HolderActivation(
            new_password=Secret(ACTIVATION_PASSWORD), revocation_phrase=Secret("NewPhrase2026")))

    unlock = manager_with(service, renewal_with_a_new_password).unlock_with_recovery_code
    with pytest.raises(AuthenticationBusy, match="nothing was changed"):
        unlock(name, Secret(created.recovery_code), Secret(UNLOCKED_PASSWORD), OPERATOR)

    assert recovery_code_hash(service, name) == code_hash  # not spent
    signs(service, name, renewed["issued"].credential_id, ACTIVATION_PASSWORD)


def test_an_unlock_that_races_the_holders_password_change_is_refused_and_the_packages_sign(service):
    created, _ = enrol(service, f"race{uuid.uuid4().hex[:8]}", kind=AccountKind.CORPORATE,
                       organisation="Example Lda")
    name = created.account.username
    new_password = "Changed-pass-2026"

    def password_change():
        service.accounts.change_password(name, Secret(PASSWORD), Secret(new_password), Secret(new_password), None,
                                         False, f"holder:{name}")

    unlock = manager_with(service, password_change).unlock_with_recovery_code
    with pytest.raises(AuthenticationBusy, match="nothing was changed"):
        unlock(name, Secret(created.recovery_code), Secret(UNLOCKED_PASSWORD), OPERATOR)
    signs(service, name, created.credential.id, new_password)

    # Asked again, the unlock goes over the account as it is now.
    service.accounts.unlock_with_recovery_code(name, Secret(created.recovery_code), Secret(UNLOCKED_PASSWORD),
                                               OPERATOR)
    signs(service, name, created.credential.id, UNLOCKED_PASSWORD)
