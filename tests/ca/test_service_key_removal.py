"""The OCSP responder's and the TSA's superseded keys leave the token: renewals driven by the
server's background work keep the token's object count constant, and responses and time-stamps
are signed with the new key and verify, on the node that renewed and on another node (its own
process, on the same database and token) that had the old key's handles cached."""

from __future__ import annotations

import datetime
import hashlib
import multiprocessing
import subprocess
import time

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver.ca import repository as repo
from signserver.ca.authority import OCSP, SUPERSEDED_KEY_GRACE, TSA
from signserver.clock import ManualClock
from signserver.errors import KeyNotFound
from tests.ca.test_authority import holder
from tests.ca.conftest import own_ca
from tests.ca.test_ca_certificates import _verify_arguments
from tests.conftest import service_with

PEM = serialization.Encoding.PEM
RENEWAL_DUE = datetime.timedelta(days=300)  # less than a quarter of a service certificate's year left


def token_objects(service) -> int:
    session = service.keys.session
    return session.run(lambda s: len(session.find(s, {})), "count the token's objects")


def service_keys(service) -> dict[str, str]:
    with service.database.read() as conn:
        return {role: repo.get_authority(conn, role).key_id for role in (OCSP, TSA)}


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def on_token(service, key_id: str) -> bool:
    try:
        service.keys.get(key_id)
        return True
    except KeyNotFound:
        return False


def tsa_query() -> tsp.TimeStampReq:
    return tsp.TimeStampReq({"version": "v1", "nonce": 7, "cert_req": True, "message_imprint": {
        "hash_algorithm": {"algorithm": "sha256"}, "hashed_message": hashlib.sha256(b"a document").digest()}})


def check_ocsp(response_der: bytes, now: datetime.datetime) -> x509.Certificate:
    """The response is good and signed by the responder certificate it carries, valid at ``now``."""
    response = ocsp.load_der_ocsp_response(response_der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    [responder] = response.certificates
    assert responder.not_valid_before_utc <= now < responder.not_valid_after_utc
    responder.public_key().verify(response.signature, response.tbs_response_bytes,
                                  *_verify_arguments(responder, response))
    return responder


def check_time_stamp(service, reply: bytes, now: datetime.datetime, folder) -> None:
    """OpenSSL verifies the token against the CA's root, at ``now``."""
    issuing, root = service.ca.chain()
    (folder / "query.tsq").write_bytes(tsa_query().dump())
    (folder / "reply.tsr").write_bytes(reply)
    (folder / "root.pem").write_bytes(root.public_bytes(PEM))
    (folder / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    result = subprocess.run(["openssl", "ts", "-verify", "-queryfile", str(folder / "query.tsq"),
                             "-in", str(folder / "reply.tsr"), "-CAfile", str(folder / "root.pem"),
                             "-untrusted", str(folder / "issuing.pem"), "-attime", str(int(now.timestamp()))],
                            capture_output=True, text=True)
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def _other_node(config, url: str, start: datetime.datetime, pipe) -> None:
    """Another node: its own process, service and token session, on the same database and token.
    Answers ("ocsp" | "tsa", request DER, time) with the response, or the error's text."""
    clock = ManualClock(start)
    service = service_with(config, url, clock)
    while (asked := pipe.recv()) is not None:
        kind, request, now = asked
        clock.advance(seconds=(now - clock.now()).total_seconds())
        try:
            pipe.send(service.ca.ocsp(request) if kind == "ocsp" else service.pades.tsa.respond(request))
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            pipe.send(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def other_node(config):
    started = []

    def start(service, clock):
        context = multiprocessing.get_context("spawn")
        here, there = context.Pipe()
        process = context.Process(target=_other_node, args=(config, service.database.url, clock.now(), there),
                                  daemon=True)
        process.start()
        started.append((process, here))

        def ask(kind: str, request: bytes) -> bytes:
            here.send((kind, request, clock.now()))
            answer = here.recv()
            assert isinstance(answer, bytes), answer
            return answer
        return ask

    yield start
    for process, pipe in started:
        pipe.send(None)
        process.join(30)
        if process.is_alive():
            process.kill()


def test_renewals_by_the_background_work_leave_the_token_as_many_objects_as_before(config, tmp_path, other_node):
    from signserver.ca.authority import CertificateRequest
    from signserver.grpc_api.server import BackgroundWork

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "renewals.db", clock)
    created, _ = holder(service)
    leaf = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                            "ra:test").certificate
    issuing = service.ca.chain()[0]
    ocsp_request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build() \
        .public_bytes(serialization.Encoding.DER)
    ask = other_node(service, clock)
    # The other node answers first: it now holds the current keys' handles.
    check_ocsp(ask("ocsp", ocsp_request), clock.now())
    check_time_stamp(service, ask("tsa", tsa_query().dump()), clock.now(), tmp_path)
    service.sealer.seal_if_due()  # as a running server has: the audit seal's key is made at the first seal
    before = token_objects(service)

    work = BackgroundWork(service, poll_seconds=0.05)
    work.start()
    try:
        for _ in range(3):
            old = service_keys(service)
            clock.advance(seconds=RENEWAL_DUE.total_seconds())
            wait_for(lambda: set(service_keys(service).values()).isdisjoint(old.values()), "the renewals")
            # Until the grace has passed, the old keys stay: a request that read them may still sign.
            assert all(on_token(service, key_id) for key_id in old.values())
            clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
            wait_for(lambda: not any(on_token(service, key_id) for key_id in old.values()), "the old keys' removal")
            assert token_objects(service) == before
            # Both nodes sign with the new keys, and what they sign verifies.
            current = service_keys(service)
            for answer in (service.ca.ocsp(ocsp_request), ask("ocsp", ocsp_request)):
                responder = check_ocsp(answer, clock.now())
                assert responder.public_key() == service.keys.public_key(current[OCSP])
            for reply in (service.pades.tsa.respond(tsa_query().dump()), ask("tsa", tsa_query().dump())):
                check_time_stamp(service, reply, clock.now(), tmp_path)
    finally:
        work.stop()
    assert token_objects(service) == before


def test_a_removal_interrupted_after_the_token_destroyed_the_key_is_finished_by_the_next_pass(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "interrupted-removal.db", clock)
    old = service_keys(service)
    clock.advance(seconds=RENEWAL_DUE.total_seconds())
    assert service.ca.renew_service_keys_if_due() == [OCSP, TSA]
    with service.database.read() as conn:
        assert {key.key_id for key in repo.superseded_keys(conn)} == set(old.values())
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
    # The pass stopped between destroying the responder's old key and forgetting it.
    service.keys.delete(old[OCSP])
    objects = token_objects(service)
    assert service.ca.renew_service_keys_if_due() == []
    assert not on_token(service, old[TSA]) and token_objects(service) == objects - 2
    with service.database.read() as conn:
        assert repo.superseded_keys(conn) == []
    assert set(service_keys(service).values()).isdisjoint(old.values())
    check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now())
    check_time_stamp(service, service.pades.tsa.respond(tsa_query().dump()), clock.now(), tmp_path)


def test_a_renewal_interrupted_after_its_key_was_made_leaves_the_old_key_working_and_no_key_behind(config, tmp_path):
    from signserver.ca.service_keys import service_key_algorithm

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "interrupted-renewal.db", clock)
    before, old = token_objects(service), service_keys(service)
    clock.advance(seconds=RENEWAL_DUE.total_seconds())
    # The responder's renewal stopped once the token had made its new key, before it committed: the
    # first step of CertificateAuthority.renew_service_key, and nothing after it.
    algorithm = service_key_algorithm(OCSP, service.ca.config, service.keys.session.capabilities())
    left = service.ca._setup.new_key(algorithm, f"ca-{OCSP}")
    assert service_keys(service) == old  # the service keeps its key and certificate
    check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now())
    assert service.ca.renew_service_keys_if_due() == [OCSP, TSA]
    assert service_keys(service)[OCSP] == left  # the key the interrupted renewal made
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
    assert service.ca.renew_service_keys_if_due() == []
    assert token_objects(service) == before
    check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now())


def _any_ocsp_request(service) -> bytes:
    """An OCSP request about the TSA's certificate (issued by the issuing CA like a holder's)."""
    issuing = service.ca.chain()[0]
    return ocsp.OCSPRequestBuilder().add_certificate(service.pades.tsa.certificate(), issuing, hashes.SHA256()) \
        .build().public_bytes(serialization.Encoding.DER)


def test_a_superseded_key_is_kept_apart_from_the_authorities_with_its_role_until_it_leaves_the_token(config, tmp_path):
    from sqlalchemy import text

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "kept-apart.db", clock)
    old = service_keys(service)
    clock.advance(seconds=RENEWAL_DUE.total_seconds())
    assert service.ca.renew_service_keys_if_due() == [OCSP, TSA]
    with service.database.read() as conn:
        assert set(conn.execute(text("SELECT name FROM authorities")).scalars()) == {"root", "issuing", OCSP, TSA}
        kept = {row.role: row for row in conn.execute(text(
            "SELECT key_id, role, certificate, superseded_at FROM superseded_ca_keys"))}
    assert {role: row.key_id for role, row in kept.items()} == old
    assert kept[OCSP].superseded_at == int(clock.now().timestamp())
    assert x509.load_der_x509_certificate(kept[TSA].certificate).public_key() == service.keys.public_key(old[TSA])
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
    assert sorted(service.ca.remove_superseded_keys()) == sorted(old.values())
    with service.database.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM superseded_ca_keys")).scalar() == 0
        assert set(conn.execute(text("SELECT name FROM authorities")).scalars()) == {"root", "issuing", OCSP, TSA}


def test_a_service_key_missing_from_the_token_is_renewed_by_the_next_pass(config, tmp_path, caplog):
    """As after restoring a database backup older than the last renewal, whose key then left the
    token: the responder and the TSA sign again once the background pass has renewed them."""
    import logging

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "missing-key.db", clock)
    old = service_keys(service)
    for key_id in old.values():
        service.keys.delete(key_id)
    with pytest.raises(KeyNotFound):
        service.ca.ocsp(_any_ocsp_request(service))

    with caplog.at_level(logging.WARNING):
        assert service.ca.renew_service_keys_if_due() == [OCSP, TSA]
    assert all(key_id in caplog.text for key_id in old.values()) and "not on the token" in caplog.text
    assert set(service_keys(service).values()).isdisjoint(old.values())
    check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now())
    check_time_stamp(service, service.pades.tsa.respond(tsa_query().dump()), clock.now(), tmp_path)
    assert service.ca.renew_service_keys_if_due() == []  # renewed once
    clock.advance(seconds=SUPERSEDED_KEY_GRACE.total_seconds() + 1)
    service.ca.remove_superseded_keys()  # gone already: forgotten
    with service.database.read() as conn:
        assert repo.superseded_keys(conn) == []


@pytest.mark.parametrize("role", [OCSP, TSA])
def test_a_service_certificate_the_operator_revoked_is_replaced_by_the_next_pass(config, tmp_path, role):
    """Revoked (its key compromised, say): the next background pass gives the role a new key and
    certificate at once, and nothing is signed under the revoked one from then on."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / f"revoked-{role}.db", clock)
    old_key, old_certificate = service.ca.service_key(role)
    service.ca.revoke(format(old_certificate.serial_number, "x"), "keyCompromise", "operator:test")
    assert service.ca.renew_service_keys_if_due() == [role]
    key, certificate = service.ca.service_key(role)
    assert key != old_key and certificate.serial_number != old_certificate.serial_number
    if role == OCSP:
        assert check_ocsp(service.ca.ocsp(_any_ocsp_request(service)), clock.now()) == certificate
    else:
        check_time_stamp(service, service.pades.tsa.respond(tsa_query().dump()), clock.now(), tmp_path)
        assert service.pades.tsa.certificate() == certificate
    assert service.ca.renew_service_keys_if_due() == []
