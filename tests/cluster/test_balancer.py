"""Two nodes behind a real nginx on one store and one token (scripts/cluster.py): calls through the
balancer are spread over both nodes as the application whose certificate the balancer forwards,
on every front (gRPC, the CSC API, the CA's endpoints); the lockout and activation tokens hold
across nodes; a node that dies leaves the calls and the background work to the other. The last
test kills a node: it runs last."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import ocsp
from sqlalchemy import create_engine, select

from signserver.store.schema import leases
from signserver.v1 import (account_pb2, account_pb2_grpc, certificate_pb2, certificate_pb2_grpc, signing_pb2,
                           signing_pb2_grpc)
from tests.cluster.conftest import Client
from tests.grpc_api.wrong_attempts_client import run_clients

PASSWORD = "Cluster-pass-2026"


@pytest.fixture(scope="module")
def clients(cluster):
    """Client certificates: ``app`` (an application, no OTP) and ``ra`` (a registration authority)."""
    folder = cluster.folder / "clients"
    node = cluster.nodes[0]
    made = node.cli("app", "create", "cluster-app", "--no-otp")
    assert made.returncode == 0, made.stderr
    for name, role in (("cluster-app", "asp"), ("cluster-ra", "ra")):
        issued = node.cli("ca", "issue-client", "--role", role, name, "--out-dir", str(folder))
        assert issued.returncode == 0, issued.stderr
    return {"app": Client(cluster, "cluster-app", folder), "ra": Client(cluster, "cluster-ra", folder)}


def holder(cluster, name: str) -> str:
    """An account with a cloud-signature certificate, made through node A; its credential id."""
    node = cluster.nodes[0]
    created = node.cli("account", "create", name, "--name", "Lei Ka Io", "--email", f"{name}@example.mo",
                       "--kind", "corporate", "--organisation", "Example Lda", "--key-algorithm", "ec-p256",
                       "--json", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert created.returncode == 0, created.stderr
    issued = node.cli("ca", "issue", name, "--profile", "cloud-signature-corporate", "--json")
    assert issued.returncode == 0, issued.stderr
    return json.loads(issued.stdout)["credential_id"]


def answered_by(cluster, request: str = "") -> set[int]:
    """The node ports the balancer passed calls to, from its access log: all of them, or those
    whose request line contains ``request``."""
    log = (cluster.balancer.folder / "access.log").read_text()
    return {int(port) for line in log.splitlines() if request in line
            for port in re.findall(r"upstream=127\.0\.0\.1:(\d+)", line)}


def reach_both(cluster, request: str, ports: set[int], call) -> None:
    """``call()`` again until the balancer has passed ``request`` to both of ``ports`` (round
    robin: a few times at most; nginx logs a request as its answer leaves)."""
    for _ in range(6):
        call()
        if answered_by(cluster, request) >= ports:
            return
    deadline = time.monotonic() + 10
    while not answered_by(cluster, request) >= ports and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answered_by(cluster, request) >= ports, f"{request} reached {answered_by(cluster, request)} of {ports}"


def account_status(channel, account: str, metadata=()):
    return account_pb2_grpc.AccountServiceStub(channel).GetAccountStatus(
        account_pb2.GetAccountStatusRequest(account=account), metadata=metadata, timeout=30)


def authorize(channel, account: str, credential: str, password: str, digest: bytes):
    return signing_pb2_grpc.SigningServiceStub(channel).Authorize(signing_pb2.AuthorizeRequest(
        account=account, password=password, credential_id=credential,
        hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest]), timeout=60)


def code_of(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_calls_through_the_balancer_reach_both_nodes_as_the_forwarded_application(cluster, clients):
    with clients["app"].channel(cluster.balancer.port) as channel:
        for _ in range(12):  # round robin over two nodes
            assert account_status(channel, "anyone").account == "anyone"
    assert answered_by(cluster) == {node.port for node in cluster.nodes}


def test_a_client_cannot_forward_a_certificate_through_the_balancer(cluster, clients):
    # The application sends the RA's certificate as if forwarded: nginx replaces the header with the
    # application's own, so the call is the application's, which is no RA.
    ra_pem = clients["ra"].certificate.read_text()
    forged = [("x-client-cert", ra_pem.replace("\n", "%0A").replace(" ", "%20"))]
    with clients["app"].channel(cluster.balancer.port) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        listing = lambda: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), metadata=forged, timeout=30)  # noqa: E731
        assert code_of(listing) is grpc.StatusCode.PERMISSION_DENIED
    # The RA itself, through the balancer, is known by the certificate the balancer forwards.
    with clients["ra"].channel(cluster.balancer.port) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        for _ in range(4):  # on both nodes
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=30)


def csc_client(cluster, client: Client) -> httpx.Client:
    """The CSC API through the balancer, presenting ``client``'s certificate (no other credential)."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    context.load_cert_chain(client.certificate, client.key)
    return httpx.Client(base_url=f"https://localhost:{cluster.balancer.csc_port}", verify=context, timeout=60)


def test_csc_sign_hash_through_the_balancer_reaches_both_nodes(cluster, clients):
    credential = holder(cluster, "cluster.csc")
    certificate = None
    # The application sends the RA's certificate as if forwarded: nginx replaces the header with
    # the application's own (two values would be refused), so every request is the application's.
    forged = {"X-Client-Cert": quote(clients["ra"].certificate.read_text(), safe="")}
    with csc_client(cluster, clients["app"]) as client:
        def sign_once() -> None:
            nonlocal certificate
            digest = hashlib.sha256(f"through the balancer {time.monotonic_ns()}".encode()).digest()
            authorized = client.post("/csc/v2/credentials/authorize", headers=forged, json={
                "credentialID": credential, "numSignatures": 1, "hashes": [base64.b64encode(digest).decode()],
                "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "authData": [{"id": "PIN", "value": PASSWORD}]})
            assert authorized.status_code == 200, authorized.text
            signed = client.post("/csc/v2/signatures/signHash", headers=forged, json={
                "credentialID": credential, "SAD": authorized.json()["SAD"],
                "hashes": [base64.b64encode(digest).decode()], "signAlgo": "1.2.840.10045.4.3.2"})
            assert signed.status_code == 200, signed.text
            if certificate is None:
                info = client.post("/csc/v2/credentials/info", json={"credentialID": credential, "certificates": "single"})
                assert info.status_code == 200, info.text
                certificate = x509.load_der_x509_certificate(base64.b64decode(info.json()["cert"]["certificates"][0]))
            certificate.public_key().verify(base64.b64decode(signed.json()["signatures"][0]), digest,
                                            ec.ECDSA(Prehashed(hashes.SHA256())))
        reach_both(cluster, "signHash", {node.csc_port for node in cluster.nodes}, sign_once)
        # info hands out the balancer's address, not a node's.
        assert f"https://localhost:{cluster.balancer.csc_port}/" in client.post("/csc/v2/info", json={}).text


def test_crls_and_ocsp_through_the_balancer_reach_both_nodes(cluster, clients):
    ports = {node.http_port for node in cluster.nodes}
    with httpx.Client(base_url=f"http://localhost:{cluster.balancer.http_port}", timeout=60) as client:
        def fetch_crl() -> None:
            answer = client.get("/crl/issuing.crl")
            assert answer.status_code == 200, answer.text
            x509.load_der_x509_crl(answer.content)
        reach_both(cluster, "/crl/issuing.crl", ports, fetch_crl)
        issuing = x509.load_der_x509_certificate(client.get("/ca/issuing.crt").content)
        application = x509.load_pem_x509_certificate(clients["app"].certificate.read_bytes())
        request = ocsp.OCSPRequestBuilder().add_certificate(application, issuing, hashes.SHA256()).build()

        def ask_ocsp() -> None:
            answer = client.post("/ocsp", content=request.public_bytes(serialization.Encoding.DER),
                                 headers={"Content-Type": "application/ocsp-request"})
            assert answer.status_code == 200, answer.text
            status = ocsp.load_der_ocsp_response(answer.content)
            assert status.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            assert status.certificate_status is ocsp.OCSPCertStatus.GOOD
        reach_both(cluster, "/ocsp", ports, ask_ocsp)
    # The certificates the nodes issue point at the balancer for their CRL and OCSP.
    points = application.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value.startswith(f"http://localhost:{cluster.balancer.http_port}/")


def test_the_lockout_holds_across_nodes(cluster, clients):
    credential = holder(cluster, "cluster.lockout")
    app = clients["app"]
    ports = [cluster.balancer.port, *(node.port for node in cluster.nodes)]
    # Wrong passwords at once: through the balancer, and straight to node A and to node B.
    with ThreadPoolExecutor(len(ports)) as pool:
        outcomes = list(pool.map(lambda port: run_clients(port, cluster.ca_file, "", "cluster.lockout", credential,
                                                          app.certificate, app.key, processes=2, calls=5), ports))
    totals: dict[str, int] = {}
    for outcome in outcomes:
        for code, count in outcome.items():
            totals[code] = totals.get(code, 0) + count
    assert sum(totals.values()) == 30
    assert totals.get("UNAUTHENTICATED", 0) <= 5 and totals.get("FAILED_PRECONDITION", 0) >= 25, totals
    # Locked on both nodes: even the right password is refused on each.
    for node in cluster.nodes:
        with app.channel(node.port) as channel:
            right = lambda: authorize(channel, "cluster.lockout", credential, PASSWORD, bytes(32))  # noqa: E731
            assert code_of(right) is grpc.StatusCode.FAILED_PRECONDITION


def test_a_token_authorised_on_one_node_is_spent_on_the_other(cluster, clients):
    credential = holder(cluster, "cluster.signer")
    app = clients["app"]
    node_a, node_b = cluster.nodes
    digest = hashlib.sha256(b"a document signed across nodes").digest()
    with app.channel(node_a.port) as channel:
        token = authorize(channel, "cluster.signer", credential, PASSWORD, digest).activation_token
    request = signing_pb2.SignHashRequest(credential_id=credential, activation_token=token,
                                          signature_algorithm="ecdsa-sha256", digests=[digest])
    with app.channel(node_b.port) as channel:
        signed = signing_pb2_grpc.SigningServiceStub(channel).SignHash(request, timeout=60)
    assert len(signed.signatures) == 1 and signed.signatures[0]
    with app.channel(node_a.port) as channel:  # spent: not again, on either node
        again = lambda: signing_pb2_grpc.SigningServiceStub(channel).SignHash(request, timeout=60)  # noqa: E731
        assert code_of(again) is not grpc.StatusCode.OK


def lease_holder_pid(cluster) -> int | None:
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(leases.c.holder, leases.c.expires_at)
                               .where(leases.c.name == "background-work")).first()
    finally:
        engine.dispose()
    if row is None or not row.holder or row.expires_at <= time.time():
        return None
    return int(row.holder.split(":")[1])


def wait_for_lease_holder(cluster, node, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while True:
        pid = lease_holder_pid(cluster)
        if pid in node.worker_pids():
            return pid
        assert time.monotonic() < deadline, f"the lease is held by pid {pid}, not by {node.name}"
        time.sleep(0.5)


def test_when_a_node_dies_calls_and_background_work_go_on_on_the_other(cluster, clients):
    holding = next(n for n in cluster.nodes if lease_holder_pid(cluster) in n.worker_pids())
    other = next(n for n in cluster.nodes if n is not holding)
    holding.kill()  # as when its machine dies: the lease is left to expire
    # A call nginx had already sent down a kept-alive connection to the dead node ends UNAVAILABLE
    # (502): nginx retries only what the node never received. Clients retry UNAVAILABLE; once
    # nginx has seen the node fail, every call goes to the other.
    failed = 0
    with clients["app"].channel(cluster.balancer.port) as channel:
        for _ in range(10):
            try:
                assert account_status(channel, "anyone").account == "anyone"
            except grpc.RpcError as error:
                assert error.code() is grpc.StatusCode.UNAVAILABLE, error
                failed += 1
                assert account_status(channel, "anyone").account == "anyone"  # the client's retry
    assert failed <= 2
    wait_for_lease_holder(cluster, other)
    with clients["app"].channel(cluster.balancer.port) as channel:
        assert account_status(channel, "anyone").account == "anyone"
