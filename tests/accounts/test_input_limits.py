"""What a client may send is refused or kept alike on SQLite and PostgreSQL: a name or address the
store could not keep is refused as invalid input before any work, never as a fault of the store."""

from __future__ import annotations

import pytest

from signserver.errors import AuthenticationFailed, InvalidArgument
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol


def authenticate(service, username: str):
    return service.accounts._authenticator.authenticate(username, Secret(PASSWORD), None, False, "test")


@pytest.mark.parametrize("name", ["n" * 65, "nul\x00name", "tab\tname"], ids=["65 characters", "NUL", "tab"])
def test_a_name_no_account_can_have_is_invalid_input(fresh_service, name):
    with pytest.raises(InvalidArgument, match="account name"):
        authenticate(fresh_service, name)


def test_the_longest_unknown_name_fails_and_counts_like_any_other(fresh_service):
    name = "n" * 64
    with pytest.raises(AuthenticationFailed):
        authenticate(fresh_service, name)
    assert fresh_service.accounts.lock_state(name).failed_attempts == 1


def test_an_address_with_a_control_character_is_refused_at_enrolment(fresh_service):
    with pytest.raises(InvalidArgument, match="is not an e-mail address"):
        enrol(fresh_service, "nul-in-address", emails=("holder\x00@example.mo",))


@pytest.mark.parametrize("name", ["ab_c1234", "kuan@dsaj.mo", "-leading", "翁心"])
def test_an_account_name_no_certificate_can_carry_is_refused_at_enrolment(fresh_service, name):
    """A certificate carries the account name as its subject's serialNumber, a PrintableString:
    a name it cannot hold is refused when the account is made, not when its first certificate is."""
    with pytest.raises(InvalidArgument, match="account name") as refused:
        enrol(fresh_service, name)
    assert refused.value.field == "account"


@pytest.mark.parametrize("field", ["holder_name", "organisation", "department", "title"])
def test_subject_values_no_certificate_can_hold_are_refused_at_enrolment(fresh_service, field):
    """A certificate's subject holds 64 characters of each: an account with more could never get one."""
    with pytest.raises(InvalidArgument, match="at most 64 characters"):
        enrol(fresh_service, f"long-{field.replace('_', '-')}", **{field: "X" * 65})
    enrol(fresh_service, f"at-most-{field.replace('_', '-')}", **{field: "X" * 64})
