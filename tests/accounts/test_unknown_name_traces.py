"""A name that no account has is kept nowhere it would outlive the lockout: holders type their
password into the account field, so what was typed there is not written to the audit trail or
the log. The audit trail records such attempts under one subject, ``UNKNOWN_NAME``; the lockout
keeps the name only while its run of failures lasts (30 minutes), then forgets it. Nor does a
refusal for a name the application's policy does not cover quote it, in the log or the answer."""

from __future__ import annotations

import logging

import grpc
import pytest

from signserver.accounts.authentication import UNKNOWN_NAME
from signserver.audit.log import AuditLog
from signserver.errors import AccountLocked, AuthenticationFailed
from signserver.secret import Secret
from tests.conftest import enrol, service_with
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_signing_api import Client, code_of

TYPED = "Sup3r-Secret-Passw0rd"  # a password, typed into the account field


def auth(service, username, password="Wrong-password-1"):
    return service.accounts._authenticator.authenticate(username, Secret(password), "123456", True, "test")


def audit_records(service):
    with service.database.transaction() as conn:
        return list(AuditLog.records(conn))


def test_what_was_typed_as_an_unknown_name_is_neither_audited_nor_logged(fresh_service, clock, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, TYPED)
    with pytest.raises(AccountLocked):
        auth(fresh_service, TYPED)

    records = audit_records(fresh_service)
    assert [r.event for r in records if r.subject == UNKNOWN_NAME] == \
        ["auth.failure"] * 5 + ["account.locked", "auth.refused"]
    assert not [r for r in records if TYPED in f"{r.subject} {r.actor} {r.detail}"]
    assert TYPED not in caplog.text
    assert "unknown name locked" in caplog.text  # the lock is still told


def test_a_known_name_is_still_audited_and_logged_by_name(fresh_service, clock, caplog):
    caplog.set_level(logging.DEBUG)
    created, _ = enrol(fresh_service)
    name = created.account.username
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name)
    with pytest.raises(AccountLocked):
        auth(fresh_service, name)
    assert [r.event for r in audit_records(fresh_service) if r.subject == name][-7:] == \
        ["auth.failure"] * 5 + ["account.locked", "auth.refused"]
    assert f"name {name} locked" in caplog.text


@pytest.mark.parametrize("method", ["Authorize", "ListCredentials", "GetAccountStatus", "ChangePassword"])
def test_a_name_the_applications_policy_does_not_cover_is_neither_logged_nor_answered(config, tmp_path, clock,
                                                                                     caplog, method):
    """The refusal of a name outside the application's policy (PERMISSION_DENIED, logged by the
    gRPC adapter) does not quote what was typed."""
    service = service_with(config, tmp_path / "signserver.db", clock)
    created, _ = enrol(service)
    _, api_key = service.applications.create("narrow-app", otp_required=False,
                                              accounts_served=(created.account.username,))
    fields = {"Authorize": dict(account=TYPED, password="x", hash_algorithm=1, digests=[bytes(32)]),
              "ListCredentials": dict(account=TYPED),
              "GetAccountStatus": dict(account=TYPED),
              "ChangePassword": dict(account=TYPED, current_password="x", new_password="Another-pass-2",
                                     confirm_new_password="Another-pass-2")}[method]
    caplog.set_level(logging.DEBUG)
    with ServerThread(config, service) as server, server.channel() as channel:
        client = Client(channel, api_key)
        stub = client.accounts if method in ("GetAccountStatus", "ChangePassword") else client.signing
        refused = code_of(lambda: client.call(stub, method, **fields))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "does not cover this account" in refused.details() and TYPED not in refused.details()
    trailers = b" ".join(value if isinstance(value, bytes) else value.encode()
                         for _, value in refused.trailing_metadata() or ())
    assert TYPED.encode() not in trailers
    assert "refused with PERMISSION_DENIED" in caplog.text and TYPED not in caplog.text
