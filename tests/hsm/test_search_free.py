"""The server's own keys are searched for once per process: audit seals, OCSP responses, time-stamps,
CA issues and health probes make no PKCS#11 object search once warm, however many objects the
token holds. (SoftHSM walks every object of the token on each search, under the process-wide
PKCS#11 lock: 13.8 µs per object, 0.4 s with 30,000 objects.)"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from signserver.accounts.model import AccountKind
from signserver.audit.seal import find_token_seal_key
from signserver.ca import repository as repo
from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock
from signserver.hsm.admin import TokenAdministrator, check_signature, count_objects
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.sealing import SealingKey
from signserver.secret import Secret
from signserver.service import SignService
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, enrol, require_key_algorithm, requires_softhsm

REPEATS = 5
FILLER_OBJECTS = 2000
SO_PIN = Secret("so-pin-for-search-tests")
USER_PIN = Secret("user-pin-for-search-tests")


def service_on(config, state: Path, token_label: str, pin: Secret) -> SignService:
    """A service with its own database and state directory (so its own audit pin) on a token."""
    state.mkdir(parents=True, exist_ok=True)
    own = replace(config, state_dir=state, database_url=f"sqlite:///{state / 'signserver.db'}",
                  hsm=replace(config.hsm, token_label=token_label))
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = SignService.from_config(own, user_pin=pin, clock=clock)
    service.prepare_database()
    return service


@dataclass
class RequestPaths:
    """The request paths that use the server's own keys, each a call that must not search."""

    service: SignService

    def __post_init__(self):
        self.service.ca.initialise(operator="operator:test")
        self.key_algorithm = self.service.keys.session.capabilities().best_key_algorithm(
            [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048], "the holder's key")
        created, _ = enrol(self.service, kind=AccountKind.CORPORATE, organisation="Example Lda",
                           department="Legal", title="Director", key_algorithm=self.key_algorithm)
        self.account = created.account
        issued = self.service.ca.issue(CertificateRequest("standard-corporate", self.account.username,
                                                          self._csr()), "ra:test")
        issuing, _ = self.service.ca.chain()
        self.ocsp_request = (ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, issuing, hashes.SHA256())
                             .build().public_bytes(serialization.Encoding.DER))

    @property
    def searches(self) -> int:
        return self.service.keys.session.searches

    def all(self) -> dict[str, Callable[[], object]]:
        return {"audit seal": self.seal, "OCSP response": self.ocsp, "time-stamp": self.time_stamp,
                "CA issue (CSR profile)": self.issue, "health probe": self.health_probe,
                "OTP seed sealing": self.otp_sealing}

    def seal(self) -> None:
        with self.service.database.transaction() as conn:
            self.service.audit.append(conn, self.service.clock.now(), "test.event", "operator:test", "search-free")
        assert self.service.sealer.seal() is not None

    def ocsp(self) -> None:
        response = ocsp.load_der_ocsp_response(self.service.ca.ocsp(self.ocsp_request))
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD

    def time_stamp(self) -> None:
        request = tsp.TimeStampReq({
            "version": "v1", "nonce": random.getrandbits(64), "cert_req": True,
            "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                                "hashed_message": hashlib.sha256(b"a document").digest()}}).dump()
        reply = tsp.TimeStampResp.load(self.service.pades.tsa.respond(request))
        assert reply["status"]["status"].native == "granted"

    def issue(self) -> None:
        request = CertificateRequest("standard-corporate", self.account.username, self._csr())
        assert self.service.ca.issue(request, "ra:test").status == "valid"

    def health_probe(self) -> None:
        assert self.service.health().serving
        self.service.server_info()
        seal_key = find_token_seal_key(self.service.keys)
        family = self.service.keys.get(seal_key.key_id).algorithm.family  # the best the token offers
        assert check_signature(self.service.keys, seal_key.key_id).family == family

    def otp_sealing(self) -> None:
        sealing = SealingKey(self.service.keys.session)  # the key is kept per session, not per object
        sealed = sealing.seal(b"JBSWY3DPEHPK3PXP", b"search-free")
        assert sealing.unseal(sealed, b"search-free") == b"JBSWY3DPEHPK3PXP"

    def _csr(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.account.holder_name),
                          x509.NameAttribute(NameOID.EMAIL_ADDRESS, self.account.emails[0])])
        request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(
            ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        return request.public_bytes(serialization.Encoding.PEM)


def searches_of(paths: RequestPaths, call: Callable[[], object], times: int = REPEATS) -> int:
    before = paths.searches
    for _ in range(times):
        call()
    return paths.searches - before


@pytest.fixture(scope="module")
def paths(config, tmp_path_factory) -> RequestPaths:
    """The request paths on the test token, each used once (the warm-up)."""
    service = service_on(config, tmp_path_factory.mktemp("search-free"), config.hsm.token_label,
                         config.hsm.user_pin(environ={}))
    paths = RequestPaths(service)
    for call in paths.all().values():
        call()
    return paths


@pytest.fixture(scope="module")
def crowded_paths(config, tmp_path_factory) -> RequestPaths:
    """The request paths on a fresh token that also holds 2,000 other objects, used once each."""
    label = f"crowded-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(label, SO_PIN, USER_PIN)
    service = service_on(config, tmp_path_factory.mktemp("crowded"), label, USER_PIN)

    # Session objects: a search walks them like token objects (what is counted here is searches,
    # not their cost), and they go with the session instead of costing 2,000 file rewrites to
    # create and as many to remove.
    def fill(session):
        for number in range(FILLER_OBJECTS):
            session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: False,
                                   Attribute.PRIVATE: False, Attribute.LABEL: f"filler-{number}",
                                   Attribute.VALUE: number.to_bytes(2, "big")})

    service.keys.session.run(fill, "fill the token")
    paths = RequestPaths(service)
    for call in paths.all().values():
        call()
    yield paths
    service.close()


PATHS = ["audit seal", "OCSP response", "time-stamp", "CA issue (CSR profile)", "health probe", "OTP seed sealing"]


@pytest.mark.parametrize("path", PATHS)
def test_warm_request_paths_do_not_search(paths, path):
    assert searches_of(paths, paths.all()[path]) == 0


@requires_softhsm("one soft token per system; the crowded token is a second one")
@pytest.mark.parametrize("path", PATHS)
def test_request_paths_do_not_search_a_crowded_token(crowded_paths, path):
    assert searches_of(crowded_paths, crowded_paths.all()[path]) == 0


@requires_softhsm("one soft token per system; the crowded token is a second one")
def test_the_crowded_token_is_crowded_and_searches_are_counted(crowded_paths):
    before = crowded_paths.searches
    assert count_objects(crowded_paths.service.keys.session) > FILLER_OBJECTS
    assert crowded_paths.searches == before + 1


def test_a_reopened_session_finds_each_key_again_once(paths):
    paths.service.keys.session.close()  # the handles are forgotten with the session
    for name, call in paths.all().items():
        assert searches_of(paths, call, times=1) <= 3, name  # a label, a key's private and public halves
        assert searches_of(paths, call) == 0, name


def test_deleting_a_key_keeps_the_other_keys_handles(paths, label):
    key = paths.service.keys.generate(paths.key_algorithm, label)
    paths.service.keys.delete(key.key_id)
    for name, call in paths.all().items():
        assert searches_of(paths, call) == 0, name


def test_hsm_health_signs_with_the_seal_key_and_counts_objects_only_when_asked(state_dir, paths, capabilities):
    def health(*extra: str) -> dict:
        result = cli_forkserver.run([str(SIGNSERVER), "hsm", "health", "--json", *extra], env=cli_env(state_dir),
                                    capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    plain = health()
    assert plain["serving"] and plain["logged_in"]
    seal_family = "ed25519" if capabilities.can_use(KeyAlgorithm.ED25519) else "rsa"  # the best the token has
    assert plain["test_signature"]["verified"] is True
    assert plain["test_signature"]["algorithm"].startswith(seal_family)
    assert plain["objects"] is None and "keys" not in plain
    assert health("--count-objects")["objects"] >= 1

    table = cli_forkserver.run([str(SIGNSERVER), "hsm", "health"], env=cli_env(state_dir), capture_output=True,
                               text=True, timeout=120)
    assert "with the audit seal key" in table.stdout and "verified" in table.stdout


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_2048, KeyAlgorithm.ED25519])
def test_the_health_probe_signs_with_any_kind_of_key(paths, capabilities, label, algorithm):
    require_key_algorithm(capabilities, algorithm)
    key = paths.service.keys.generate(algorithm, label)
    try:
        assert check_signature(paths.service.keys, key.key_id).family == algorithm.family
    finally:
        paths.service.keys.delete(key.key_id)


def test_the_ca_keys_are_read_from_the_token_once_per_session(paths):
    # Type and public half read once: OCSP responses and certificates then never touch the token
    # to look the key up.
    with paths.service.database.read() as conn:
        key_id = repo.get_authority(conn, "ocsp-responder").key_id
    assert hsm_private_key(paths.service.keys, key_id) is hsm_private_key(paths.service.keys, key_id)
