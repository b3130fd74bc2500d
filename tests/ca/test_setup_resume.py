"""The CA's first start is resumable: interrupted after any step (an exception standing for a crash,
and a real kill -9 of `signserver ca init`), the next attempt finishes what is missing, with exactly
one root, issuing, OCSP and TSA key on the token and working CRLs, OCSP and TSA."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import replace

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from signserver.ca import repository as repo
from signserver.ca.setup import ISSUING, OCSP, ROOT, STEPS, TSA
from signserver.errors import AlreadyExists
from signserver.grpc_api.server import bootstrap
from tests import cli_forkserver
from tests.conftest import ROOT as REPOSITORY
from tests.conftest import SIGNSERVER, cli_env, database_url, production_environ, service_with

PURPOSES = ("ca-root", "ca-issuing", "ca-ocsp-responder", "ca-tsa")
# Every point the set-up passes, in order: a key generated (its step not committed yet), a step done.
CHECKPOINTS = ("key:ca-root", ROOT, "key:ca-issuing", ISSUING, "key:ca-ocsp-responder", OCSP, "key:ca-tsa", TSA,
               "crls")


class Crash(Exception):
    """Stands for the process dying at a checkpoint."""


def crash_at(point: str):
    def checkpoint(step: str) -> None:
        if step == point:
            raise Crash(step)
    return checkpoint


@pytest.fixture
def quick_ca(config):
    """EC P-256 root and issuing keys: the steps are what is tested here, not RSA key generation."""
    return replace(config.ca, root_key_algorithm="ec-p256", issuing_key_algorithm="ec-p256")


@pytest.fixture
def make_service(config, tmp_path, clock, quick_ca):
    """Services on one database of this test's own: each call stands for another start."""
    def make(**ca_changes):
        return service_with(config, tmp_path / "signserver.db", clock, ca=replace(quick_ca, **ca_changes))
    return make


def ca_keys(service, before: set[str]) -> dict[str, list]:
    """The CA's keys on the token made since ``before`` (key ids), by purpose (label prefix)."""
    made = [k for k in service.keys.list() if k.key_id not in before]
    return {purpose: [k for k in made if k.label.startswith(purpose + "-")] for purpose in PURPOSES}


def key_ids(service) -> set[str]:
    return {k.key_id for k in service.keys.list()}


def verify(public_key, signature: bytes, data: bytes, hash_algorithm) -> None:
    """Raises: InvalidSignature."""
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    else:
        public_key.verify(signature, data)


def assert_complete_and_working(service, before: set[str]) -> None:
    """Exactly one key per CA purpose (the one each authority uses), and CRLs, OCSP and TSA work."""
    status = service.ca.status()
    assert status.ready and status.missing == []
    keys = ca_keys(service, before)
    assert {purpose: len(found) for purpose, found in keys.items()} == dict.fromkeys(PURPOSES, 1)
    with service.database.read() as conn:
        used = {name: repo.get_authority(conn, name).key_id for name in (ROOT, ISSUING, OCSP, TSA)}
    assert used == {name: keys[f"ca-{name}"][0].key_id for name in (ROOT, ISSUING, OCSP, TSA)}
    assert all(found == [] for found in ca_keys(service, before | set(used.values())).values())

    status.issuing.verify_directly_issued_by(status.root)
    assert x509.load_der_x509_crl(service.ca.crl(ISSUING)).is_signature_valid(status.issuing.public_key())
    assert x509.load_der_x509_crl(service.ca.crl(ROOT)).is_signature_valid(status.root.public_key())

    request = ocsp.OCSPRequestBuilder().add_certificate(status.ocsp_responder, status.issuing, hashes.SHA1()).build()
    response = ocsp.load_der_ocsp_response(service.ca.ocsp(request.public_bytes(serialization.Encoding.DER)))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    verify(status.ocsp_responder.public_key(), response.signature, response.tbs_response_bytes,
           response.signature_hash_algorithm)

    query = tsp.TimeStampReq({"version": "v1", "nonce": random.getrandbits(64), "cert_req": True,
                              "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                                                  "hashed_message": hashlib.sha256(b"a document").digest()}}).dump()
    reply = tsp.TimeStampResp.load(service.pades.tsa.respond(query))
    assert reply["status"]["status"].native == "granted"
    signed = reply["time_stamp_token"]["content"]
    signer = signed["signer_infos"][0]
    carried = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]
    assert status.tsa in carried
    assert signer["sid"].chosen["serial_number"].native == status.tsa.serial_number
    signed_attributes = b"\x31" + signer["signed_attrs"].dump()[1:]  # signed as a SET, stored [0] IMPLICIT
    digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[
        signer["digest_algorithm"]["algorithm"].native]
    verify(status.tsa.public_key(), signer["signature"].native, signed_attributes, digest)


@pytest.mark.parametrize("point", CHECKPOINTS)
def test_an_interrupted_initialise_is_finished_by_the_next(make_service, point):
    first = make_service()
    before = key_ids(first)
    with pytest.raises(Crash):
        first.ca.initialise("operator:test", checkpoint=crash_at(point))

    # What `ca show` reads tells the truth: the steps committed before the crash, and no more.
    status = first.ca.status()
    committed = [step for step in CHECKPOINTS[:CHECKPOINTS.index(point) + 1] if step in STEPS]
    assert status.steps == {step: step in committed for step in STEPS}
    assert status.ready == (point == "crls")
    assert status.started == bool(committed)

    again = make_service()  # the next start
    if point == "crls":
        with pytest.raises(AlreadyExists):
            again.ca.initialise("operator:test")
    else:
        again.ca.initialise("operator:test")
    assert_complete_and_working(again, before)


def test_a_key_left_by_an_interrupted_step_is_the_one_used(make_service):
    first = make_service()
    before = key_ids(first)
    with pytest.raises(Crash):
        first.ca.initialise("operator:test", checkpoint=crash_at("key:ca-issuing"))
    left = ca_keys(first, before)["ca-issuing"]
    assert len(left) == 1, "the key was generated and its step did not commit"

    status = make_service().ca.initialise("operator:test")
    assert status.issuing.public_key() == first.keys.public_key(left[0].key_id)


def test_a_left_key_of_another_algorithm_is_destroyed(make_service):
    first = make_service()
    before = key_ids(first)
    with pytest.raises(Crash):
        first.ca.initialise("operator:test", checkpoint=crash_at("key:ca-root"))
    [left] = ca_keys(first, before)["ca-root"]

    again = make_service(root_key_algorithm="ec-p384")  # the setting changed before the next start
    status = again.ca.initialise("operator:test")
    assert left.key_id not in key_ids(again)
    assert isinstance(status.root.public_key(), ec.EllipticCurvePublicKey)
    assert status.root.public_key().curve.name == "secp384r1"
    assert_complete_and_working(again, before)


def test_a_left_key_whose_public_half_is_gone_is_destroyed_and_made_again(make_service):
    """What a version that did not check its keys as they were made could leave: a pair whose
    public half another process's search spoiled (signserver/hsm/new_objects.py)."""
    first = make_service()
    before = key_ids(first)
    with pytest.raises(Crash):
        first.ca.initialise("operator:test", checkpoint=crash_at("key:ca-tsa"))
    [left] = ca_keys(first, before)["ca-tsa"]
    raw_id = bytes.fromhex(left.key_id)
    first.keys.session.run(lambda s: [public.destroy() for public in first.keys.session.find(
        s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: raw_id})], "spoil the TSA key")

    again = make_service()
    again.ca.initialise("operator:test")
    assert left.key_id not in key_ids(again)
    assert_complete_and_working(again, before)


def test_the_servers_first_start_finishes_an_interrupted_set_up(config, make_service, tmp_path):
    first = make_service()
    before = key_ids(first)
    with pytest.raises(Crash):
        first.ca.initialise("operator:test", checkpoint=crash_at(ISSUING))

    again = make_service()
    served = replace(config, database_url=database_url(tmp_path / "signserver.db"),
                     server=replace(config.server, plaintext=True))
    bootstrap(served, again)  # refused with "the CA is already initialised" before
    assert_complete_and_working(again, before)


def external_root(request: x509.CertificateSigningRequest, now: datetime.datetime) -> tuple[bytes, bytes]:
    """An outside root's certificate and the issuing CA certificate it signs for ``request`` (PEM),
    both valid from ``now`` (the service's clock)."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "External Root")])
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(root_key, hashes.SHA384()))
    issuing = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(name)
               .public_key(request.public_key()).serial_number(2).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1825))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(root_key, hashes.SHA384()))
    return (issuing.public_bytes(serialization.Encoding.PEM), root.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("point", ["key:ca-issuing", "external-root-requested"])
def test_an_interrupted_external_root_request_is_asked_again_for_the_same_key(make_service, point):
    first = make_service()
    before = key_ids(first)
    with pytest.raises(Crash):
        first.ca.begin_external_root("operator:test", checkpoint=crash_at(point))

    request = make_service().ca.begin_external_root("operator:test")
    again = make_service().ca.begin_external_root("operator:test")  # e.g. the CSR file was lost
    assert again.public_key() == request.public_key()
    assert len(ca_keys(first, before)["ca-issuing"]) == 1

    issuing, root = external_root(request, first.clock.now())
    status = make_service().ca.complete_external_root(issuing, root, "operator:test")
    assert status.ready and status.root_key_outside
    assert {p: len(k) for p, k in ca_keys(first, before).items()} == {
        "ca-root": 0, "ca-issuing": 1, "ca-ocsp-responder": 1, "ca-tsa": 1}


@pytest.mark.parametrize("point", [ISSUING, "key:ca-ocsp-responder", TSA])
def test_an_interrupted_external_root_installation_is_finished(make_service, point):
    first = make_service()
    before = key_ids(first)
    issuing, root = external_root(first.ca.begin_external_root("operator:test"), first.clock.now())
    with pytest.raises(Crash):
        first.ca.complete_external_root(issuing, root, "operator:test", checkpoint=crash_at(point))
    assert not first.ca.status().ready and not first.ca.status().awaiting_external_root

    # Either the same command again or the server's next start finishes it.
    status = make_service().ca.complete_external_root(issuing, root, "operator:test")
    assert status.ready
    assert {p: len(k) for p, k in ca_keys(first, before).items()} == {
        "ca-root": 0, "ca-issuing": 1, "ca-ocsp-responder": 1, "ca-tsa": 1}
    ocsp_request = ocsp.OCSPRequestBuilder().add_certificate(status.ocsp_responder, status.issuing,
                                                             hashes.SHA1()).build()
    response = ocsp.load_der_ocsp_response(first.ca.ocsp(ocsp_request.public_bytes(serialization.Encoding.DER)))
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_initialise_finishes_an_interrupted_external_root_installation(make_service):
    first = make_service()
    issuing, root = external_root(first.ca.begin_external_root("operator:test"), first.clock.now())
    with pytest.raises(Crash):
        first.ca.complete_external_root(issuing, root, "operator:test", checkpoint=crash_at(ISSUING))
    status = make_service().ca.initialise("server:bootstrap")
    assert status.ready and status.root.subject.rfc4514_string() == "CN=External Root"


# --- a real kill -9 -----------------------------------------------------------------------


@pytest.fixture
def own_token(tmp_path):
    """A token of this test's own: a process killed while the token writes must not touch the
    token the other tests share."""
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNSERVER", "SOFTHSM2_CONF"))}
    subprocess.run([str(REPOSITORY / "softhsm-setup" / "softhsm-setup"), str(state)],
                   env={**env, "SIGNSERVER": str(SIGNSERVER)}, check=True, capture_output=True, timeout=120)
    return state


def cli(state, *args, environ: dict[str, str] | None = None, **kwargs):
    return cli_forkserver.run([str(SIGNSERVER), *args], capture_output=True, text=True, timeout=300,
                              env=cli_env(state, **(environ or {})), **kwargs)


def wait_for_pending_key(url: str, purpose: str, process: subprocess.Popen, seconds: float = 120) -> bool:
    """Whether ``process`` recorded the label of the key it is about to generate for ``purpose``."""
    if url.startswith("sqlite:///"):  # read only: never create the file before the process does
        url = f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with engine.connect() as conn:
                    if conn.execute(text("SELECT 1 FROM pending_ca_keys WHERE purpose = :p"),
                                    {"p": purpose}).first():
                        return True
            except DBAPIError:
                pass  # not created yet, or mid-migration
            time.sleep(0.005)
        return False
    finally:
        engine.dispose()


def test_ca_init_killed_while_the_issuing_key_is_generated_is_finished_by_the_next(own_token):
    # RSA-3072 (the default) takes SoftHSM long enough that the kill lands while the issuing
    # CA's key is generated or just after, before its step commits.
    production = production_environ()
    process = subprocess.Popen([str(SIGNSERVER), "ca", "init"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=cli_env(own_token, **production))
    try:
        assert wait_for_pending_key(database_url(own_token / "signserver.db"), "ca-issuing", process), \
            "ca init never reached the issuing CA's key"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    shown = cli(own_token, "ca", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    steps = json.loads(shown.stdout)["steps"]
    assert steps["root"] and not steps["issuing"] and not json.loads(shown.stdout)["ready"]
    assert "set-up not finished: done root; missing issuing" in cli(own_token, "ca", "show").stdout

    finished = cli(own_token, "ca", "init", environ=production)
    assert finished.returncode == 0, finished.stderr
    assert "ready" in finished.stdout
    listed = cli(own_token, "hsm", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    labels = [key["label"] for key in json.loads(listed.stdout)]
    assert {p: sum(label.startswith(p + "-") for label in labels) for p in PURPOSES} == dict.fromkeys(PURPOSES, 1)
    crl = cli(own_token, "ca", "crl")
    assert crl.returncode == 0 and crl.stdout.startswith("-----BEGIN X509 CRL-----")
