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
