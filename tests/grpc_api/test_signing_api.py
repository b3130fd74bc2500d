"""SigningService and AccountService over a real TLS gRPC server, called as an application would."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from signserver.accounts import otp
from signserver.audit.log import AuditLog
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.v1 import account_pb2, account_pb2_grpc, signing_pb2, signing_pb2_grpc
from tests.conftest import PASSWORD, enrol, production_costs, service_with
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.wrong_attempts_client import run_clients
from tests.hsm.test_keystore import verify

SHA256 = signing_pb2.HASH_ALGORITHM_SHA256


class Client:
    """An application's view: stubs plus its API key on every call."""

    def __init__(self, channel, api_key):
        self.signing = signing_pb2_grpc.SigningServiceStub(channel)
        self.accounts = account_pb2_grpc.AccountServiceStub(channel)
        self.metadata = [("x-api-key", api_key)] if api_key else []

    def call(self, stub, method, **fields):
        rpc = getattr(stub, method)
        request_type = {"ListCredentials": signing_pb2.ListCredentialsRequest,
                        "GetCredentialInfo": signing_pb2.GetCredentialInfoRequest,
                        "Authorize": signing_pb2.AuthorizeRequest, "SignHash": signing_pb2.SignHashRequest,
                        "ChangePassword": account_pb2.ChangePasswordRequest,
                        "GetAccountStatus": account_pb2.GetAccountStatusRequest}[method]
        return rpc(request_type(**fields), metadata=self.metadata, timeout=60)


@pytest.fixture
def world(config, tmp_path, clock):
    """A server with its own database and clock, an application, and two holders."""
    yield from _world(config, tmp_path, clock)


@pytest.fixture
def racing_world(config, tmp_path, clock):
    """``world`` with password checks as long as the defaults' (tens of milliseconds), so that
    racing attempts overlap as they would in production."""
    yield from _world(production_costs(config), tmp_path, clock)


def _world(config, tmp_path, clock):
    service = service_with(config, tmp_path / "signserver.db", clock)
    alice = enrol(service, key_algorithm=KeyAlgorithm.RSA_2048)
    bob = enrol(service)
    app, api_key = service.applications.create("grpc-app")
    with ServerThread(config, service) as server, server.channel() as channel:
        yield service, server, Client(channel, api_key), api_key, alice, bob, channel


def authorize(client, holder, clock, digests, **overrides):
    created, seed = holder
    fields = dict(account=created.account.username, password=PASSWORD, otp=otp.code_at(seed, clock.now()),
                  credential_id=created.credential.id, hash_algorithm=SHA256, digests=digests)
    fields.update(overrides)
    return client.call(client.signing, "Authorize", **fields)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_list_info_authorize_and_sign(world, clock):
    service, _, client, _, alice, _, _ = world
    created = alice[0]
    messages = [f"document {i}".encode() for i in range(50)]
    digests = [hashlib.sha256(m).digest() for m in messages]
    token = authorize(client, alice, clock, digests, credential_id="")  # the holder's signing credential
    assert token.signatures == 50 and token.expires_at.seconds > 0
    assert token.credential_id == created.credential.id
    listed = client.call(client.signing, "ListCredentials", account=created.account.username,
                         activation_token=token.activation_token)
    assert [c.id for c in listed.credentials] == [created.credential.id]
    info = client.call(client.signing, "GetCredentialInfo", credential_id=created.credential.id)
    assert info.credential.key_algorithm == "rsa-2048" and "rsa-pss-sha256" in info.signature_algorithms
    public = load_der_public_key(info.public_key)

    half = client.call(client.signing, "SignHash", credential_id=created.credential.id,
                       activation_token=token.activation_token, signature_algorithm="rsa-pss-sha256",
                       digests=digests[:25])
    rest = client.call(client.signing, "SignHash", credential_id=created.credential.id,
                       activation_token=token.activation_token, signature_algorithm="rsa-pss-sha256",
                       digests=digests[25:])
    signatures = list(half.signatures) + list(rest.signatures)
    for message, signature in zip(messages, signatures, strict=True):
        verify(public, signature, SignatureAlgorithm.RSA_PSS_SHA256, message)
    reused = code_of(lambda: client.call(client.signing, "SignHash", credential_id=created.credential.id,
                                         activation_token=token.activation_token,
                                         signature_algorithm="rsa-pss-sha256", digests=digests[:1]))
    assert reused.code() is grpc.StatusCode.PERMISSION_DENIED


def test_application_must_authenticate(world):
    _, _, _, _, alice, _, channel = world
    for key in (None, "ssk_not-a-real-key"):
        anonymous = Client(channel, key)
        error = code_of(lambda: anonymous.call(anonymous.signing, "ListCredentials",
                                               account=alice[0].account.username))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED and "x-api-key" in error.details()


@pytest.mark.parametrize("wrong", ["account", "password", "otp"])
def test_wrong_factors_say_nothing_about_which(world, clock, wrong):
    _, _, client, _, alice, _, _ = world
    overrides = {"account": {"account": "nobody-at-all"}, "password": {"password": "Wrong-pass-123"},
                 "otp": {"otp": "000000"}}[wrong]
    error = code_of(lambda: authorize(client, alice, clock, [bytes(32)], **overrides))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "authentication failed: the account, password or one-time password is not right"


def test_user_a_cannot_reach_user_bs_key(world, clock):
    _, _, client, _, alice, bob, _ = world
    error = code_of(lambda: authorize(client, alice, clock, [bytes(32)], credential_id=bob[0].credential.id))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED  # like a wrong factor: see test_account_oracle
    token = authorize(client, bob, clock, [bytes(32)])
    error = code_of(lambda: client.call(client.signing, "SignHash", credential_id=alice[0].credential.id,
                                        activation_token=token.activation_token,
                                        signature_algorithm="rsa-pkcs1v15-sha256", digests=[bytes(32)]))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


NOT_UTF8 = b"\xff\xfe\xfa"


@pytest.mark.parametrize("case,expected,fragment", [
    ("empty account", grpc.StatusCode.INVALID_ARGUMENT, "account is required"),
    ("huge password", grpc.StatusCode.INVALID_ARGUMENT, "password has at most"),
    ("no hash algorithm", grpc.StatusCode.INVALID_ARGUMENT, "hash_algorithm"),
    ("short digest", grpc.StatusCode.INVALID_ARGUMENT, "has 20 bytes"),
    ("not utf-8", grpc.StatusCode.INVALID_ARGUMENT, "UTF-8"),
])
def test_bad_input_is_refused_and_changes_nothing(world, clock, case, expected, fragment):
    service, server, client, api_key, alice, _, channel = world
    name = alice[0].account.username
    overrides = {"empty account": {"account": ""}, "huge password": {"password": "x" * 100_000},
                 "no hash algorithm": {"hash_algorithm": 0}, "short digest": {"digests": [bytes(20)]}}.get(case, {})
    if case == "not utf-8":
        # A hand-built AuthorizeRequest whose account (field 1) is not UTF-8.
        raw = bytes([0x0A, len(NOT_UTF8)]) + NOT_UTF8
        call = channel.unary_unary("/signserver.v1.SigningService/Authorize",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        error = code_of(lambda: call(raw, metadata=[("x-api-key", api_key)], timeout=30))
    else:
        digests = overrides.pop("digests", [bytes(32)])
        error = code_of(lambda: authorize(client, alice, clock, digests, **overrides))
    assert error.code() is expected, error.details()
    assert fragment in error.details()
    with service.database.transaction() as conn:
        events = [r.event for r in AuditLog.records(conn) if r.subject == name]
    assert events == ["account.created", "key.generated"]  # nothing was attempted, counted or issued
    assert service.accounts.get(name).failed_attempts == 0


def test_unknown_signature_algorithm(world, clock):
    _, _, client, _, alice, _, _ = world
    token = authorize(client, alice, clock, [bytes(32)])
    error = code_of(lambda: client.call(client.signing, "SignHash", credential_id=alice[0].credential.id,
                                        activation_token=token.activation_token, signature_algorithm="md5-rsa",
                                        digests=[bytes(32)]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "md5-rsa" in error.details()


def test_change_password_and_status(world, clock):
    service, _, client, _, alice, _, channel = world
    created, seed = alice
    name = created.account.username
    client.call(client.accounts, "ChangePassword", account=name, current_password=PASSWORD,
                new_password="Brand-new-pass-1", confirm_new_password="Brand-new-pass-1",
                otp=otp.code_at(seed, clock.now()))
    status = client.call(client.accounts, "GetAccountStatus", account=name)
    assert status.status == "active" and status.holder_fields_withheld and not status.holder_name
    _, named_key = service.applications.create("named-app", accounts_served=(name,))
    named = Client(channel, named_key)
    status = named.call(named.accounts, "GetAccountStatus", account=name)
    assert status.status == "active" and status.holder_name == "Weng Sam LUZIA KUAN"
    assert not status.holder_fields_withheld and status.password_changed_at.seconds > 0
    mismatch = code_of(lambda: client.call(client.accounts, "ChangePassword", account=name,
                                           current_password="Brand-new-pass-1", new_password="Another-pass-2",
                                           confirm_new_password="Another-pass-3"))
    assert mismatch.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_fifty_parallel_wrong_attempts_from_several_processes(racing_world, clock):
    service, server, client, api_key, alice, _, _ = racing_world
    created, seed = alice
    name = created.account.username
    totals = run_clients(server.port, server.config.tls.cert_file, api_key, name, created.credential.id,
                         timeout=120)
    assert sum(totals.values()) == 50
    assert totals.get("UNAUTHENTICATED", 0) <= 5, totals  # evaluated as wrong
    assert totals.get("FAILED_PRECONDITION", 0) >= 45, totals  # refused unchecked: locked
    assert service.accounts.get(name).failed_attempts == 5

    locked = code_of(lambda: authorize(client, alice, clock, [bytes(32)]))
    assert locked.code() is grpc.StatusCode.FAILED_PRECONDITION and "locked until" in locked.details()
    status = client.call(client.accounts, "GetAccountStatus", account=name)
    assert status.status == "locked" and status.locked_until.seconds > 0

    clock.advance(minutes=30)
    assert authorize(client, alice, clock, [bytes(32)]).activation_token


def test_no_secret_reaches_the_log(world, clock, caplog, config):
    service, _, client, api_key, alice, _, _ = world
    created, seed = alice
    with caplog.at_level("DEBUG"):
        token = authorize(client, alice, clock, [bytes(32)])
        client.call(client.signing, "SignHash", credential_id=created.credential.id,
                    activation_token=token.activation_token, signature_algorithm="rsa-pkcs1v15-sha256",
                    digests=[bytes(32)])
        code_of(lambda: authorize(client, alice, clock, [bytes(32)], password="Wrong-but-secret-9"))
    text = caplog.text
    for secret in (PASSWORD, "Wrong-but-secret-9", api_key, token.activation_token, seed, created.recovery_code,
                   config.hsm.user_pin(environ={}).reveal()):
        assert secret not in text
