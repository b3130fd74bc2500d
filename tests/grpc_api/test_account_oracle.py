"""No account oracle: over a real gRPC server, an application without the holder's factors cannot
tell an existing account from a name nobody has, by Authorize, ChangePassword, ListCredentials or
GetAccountStatus; and an OTP of non-ASCII digits is a wrong factor like any other."""

from __future__ import annotations

import datetime
import json

import grpc
import pytest

from signserver.accounts import otp
from signserver.accounts.authentication import UNKNOWN_NAME
from signserver.audit.log import AuditLog
from signserver.errors import AuthenticationFailed
from tests.conftest import PASSWORD, enrol, service_with
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_signing_api import Client, code_of

SHA256 = 1  # HASH_ALGORITHM_SHA256
UNKNOWN = "nobody-has-this-name"
NON_ASCII_CODES = ["١٢٣٤٥٦", "１２３４５６", "¹²³⁴⁵⁶", "۱۲۳۴۵۶"]


@pytest.fixture
def world(config, tmp_path, clock):
    """A server with its own database and clock, an application serving every account, two holders."""
    service = service_with(config, tmp_path / "signserver.db", clock)
    alice, bob = enrol(service), enrol(service)
    _, api_key = service.applications.create("oracle-app")
    with ServerThread(config, service) as server, server.channel() as channel:
        yield service, Client(channel, api_key), alice, bob, channel


def authorize(client, clock, account, holder, **overrides):
    """Authorize for ``account`` with the holder's password, current OTP and credential, unless
    ``overrides`` say otherwise."""
    created, seed = holder
    fields = dict(account=account, password=PASSWORD, otp=otp.code_at(seed, clock.now()),
                  credential_id=created.credential.id, hash_algorithm=SHA256, digests=[bytes(32)])
    fields.update(overrides)
    return client.call(client.signing, "Authorize", **fields)


def refusal(call) -> tuple:
    """What a caller sees of a refusal: status, message and trailing metadata."""
    error = code_of(call)
    return error.code(), error.details(), tuple(error.trailing_metadata() or ())


def last_record(service, subject):
    with service.database.transaction() as conn:
        record = [r for r in AuditLog.records(conn) if r.subject == subject][-1]
    return record.event, record.actor, tuple(sorted(json.loads(record.detail)))


def failures(service, name) -> int:
    return service.accounts.lock_state(name).failed_attempts


def test_every_refusal_of_authorize_is_one_refusal_counted_and_audited_alike(world, clock):
    service, client, alice, bob, _ = world
    name = alice[0].account.username
    wrong_otp = "000000" if otp.code_at(alice[1], clock.now()) != "000000" else "111111"
    cases = {
        "unknown account": lambda: authorize(client, clock, UNKNOWN, alice),
        "wrong password": lambda: authorize(client, clock, name, alice, password="Wrong-pass-123"),
        "wrong otp": lambda: authorize(client, clock, name, alice, otp=wrong_otp),
        # The right factors, with a credential the account does not hold.
        "credential not held": lambda: authorize(client, clock, name, alice, credential_id=bob[0].credential.id),
    }
    seen, records = {}, {}
    for case, call in cases.items():
        subject = UNKNOWN if case == "unknown account" else name
        before = failures(service, subject)
        seen[case] = refusal(call)
        assert failures(service, subject) == before + 1, case  # counted toward the name's lock
        records[case] = last_record(service, UNKNOWN_NAME if subject == UNKNOWN else subject)
    assert len(set(seen.values())) == 1, seen
    code, message, _ = seen["unknown account"]
    assert code is grpc.StatusCode.UNAUTHENTICATED and message == AuthenticationFailed.GENERIC
    assert set(records.values()) == {("auth.failure", "application:oracle-app", ("attempt",))}, records


@pytest.mark.parametrize("known", [True, False], ids=["known account", "unknown name"])
def test_five_refusals_of_any_mix_lock_the_name_known_or_not(world, clock, known):
    service, client, alice, bob, _ = world
    name = alice[0].account.username if known else UNKNOWN
    mix = [dict(password="Wrong-pass-123"), dict(otp="000000"), dict(otp=NON_ASCII_CODES[0]),
           dict(credential_id=bob[0].credential.id), dict(password="Wrong-pass-456")]
    for overrides in mix:
        code, message, _ = refusal(lambda: authorize(client, clock, name, alice, **overrides))
        assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, AuthenticationFailed.GENERIC)
    until = clock.now() + datetime.timedelta(minutes=30)
    locked = refusal(lambda: authorize(client, clock, name, alice))  # right factors for the known one
    assert locked[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert locked[1].startswith(f"the account is locked until {until.isoformat(timespec='seconds')}")
    status = client.call(client.accounts, "GetAccountStatus", account=name)
    assert status.status == "locked" and status.locked_until.ToDatetime(datetime.timezone.utc) == until

    clock.advance(minutes=30)
    if known:
        assert authorize(client, clock, name, alice).activation_token
    else:
        assert refusal(lambda: authorize(client, clock, name, alice))[0] is grpc.StatusCode.UNAUTHENTICATED


def test_locked_names_answer_alike_known_or_not(world, clock):
    service, client, alice, _, _ = world
    names = [alice[0].account.username, UNKNOWN]
    for name in names:
        for _ in range(5):
            refusal(lambda: authorize(client, clock, name, alice, password="Wrong-pass-123"))
    answers = [refusal(lambda: authorize(client, clock, name, alice)) for name in names]
    assert answers[0] == answers[1] and answers[0][0] is grpc.StatusCode.FAILED_PRECONDITION
    assert {last_record(service, UNKNOWN_NAME if name == UNKNOWN else name) for name in names} == {
        ("auth.refused", "application:oracle-app", ("reason",))}


@pytest.mark.parametrize("code", NON_ASCII_CODES)
def test_an_otp_of_non_ascii_digits_is_a_wrong_factor_counted_and_audited(world, clock, code):
    service, client, alice, _, _ = world
    name = alice[0].account.username
    status, message, _ = refusal(lambda: authorize(client, clock, name, alice, otp=code))
    assert (status, message) == (grpc.StatusCode.UNAUTHENTICATED, AuthenticationFailed.GENERIC)
    assert failures(service, name) == 1
    assert last_record(service, name)[0] == "auth.failure"


def test_a_disabled_account_is_told_only_to_the_holders_factors(world, clock):
    service, client, alice, _, _ = world
    name = alice[0].account.username
    service.accounts.set_status(name, enabled=False, operator="operator:test")
    wrong = refusal(lambda: authorize(client, clock, name, alice, password="Wrong-pass-123"))
    assert wrong == refusal(lambda: authorize(client, clock, UNKNOWN, alice))
    right = refusal(lambda: authorize(client, clock, name, alice))
    assert right[0] is grpc.StatusCode.FAILED_PRECONDITION and "disabled" in right[1]


def test_change_password_refuses_an_unknown_name_like_a_wrong_password(world, clock):
    service, client, alice, _, _ = world
    holder, seed = alice
    name = holder.account.username

    def change(account, current):
        return client.call(client.accounts, "ChangePassword", account=account, current_password=current,
                           new_password="Brand-new-pass-1", confirm_new_password="Brand-new-pass-1",
                           otp=otp.code_at(seed, clock.now()))

    known = refusal(lambda: change(name, "Wrong-pass-123"))
    unknown = refusal(lambda: change(UNKNOWN, PASSWORD))
    assert known == unknown and known[0] is grpc.StatusCode.UNAUTHENTICATED
    assert failures(service, name) == failures(service, UNKNOWN) == 1
    assert last_record(service, name) == last_record(service, UNKNOWN_NAME) == (
        "auth.failure", "application:oracle-app", ("attempt",))


def test_list_credentials_needs_the_holders_factors_or_a_policy_naming_the_account(world, clock):
    service, client, alice, bob, channel = world
    holder = alice[0]
    name = holder.account.username
    known = refusal(lambda: client.call(client.signing, "ListCredentials", account=name))
    unknown = refusal(lambda: client.call(client.signing, "ListCredentials", account=UNKNOWN))
    assert known == unknown and known[0] is grpc.StatusCode.PERMISSION_DENIED

    token = authorize(client, clock, name, alice, credential_id="")  # the holder's signing credential
    assert token.credential_id == holder.credential.id
    listed = client.call(client.signing, "ListCredentials", account=name, activation_token=token.activation_token)
    assert [c.id for c in listed.credentials] == [holder.credential.id]
    # The token proves Alice's factors, for Alice's account only, and to this application only.
    for account in (bob[0].account.username, UNKNOWN):
        assert refusal(lambda: client.call(client.signing, "ListCredentials", account=account,
                                           activation_token=token.activation_token)) == known
    _, other_key = service.applications.create("other-app")
    other = Client(channel, other_key)
    assert refusal(lambda: other.call(other.signing, "ListCredentials", account=name,
                                      activation_token=token.activation_token)) == known
    clock.advance(minutes=10)  # the token has expired
    assert refusal(lambda: client.call(client.signing, "ListCredentials", account=name,
                                       activation_token=token.activation_token)) == known

    _, named_key = service.applications.create("named-app", accounts_served=(name,))
    named = Client(channel, named_key)
    assert [c.id for c in named.call(named.signing, "ListCredentials", account=name).credentials] == \
        [holder.credential.id]


def test_account_status_tells_only_the_lock_unless_the_policy_names_the_account(world, clock):
    service, client, alice, _, _ = world
    name = alice[0].account.username
    service.accounts.set_status(name, enabled=False, operator="operator:test")

    def status(account):
        answer = client.call(client.accounts, "GetAccountStatus", account=account)
        return answer.SerializeToString(), answer

    known, shown = status(name)
    unknown, _ = status(UNKNOWN)
    assert shown.holder_fields_withheld and shown.status == "active" and not shown.holder_name
    # Byte for byte the same answer, but for the name asked about.
    shown.account = UNKNOWN
    assert shown.SerializeToString() == unknown
