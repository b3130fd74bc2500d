"""One world for the fuzz tests: a CA, holders with certificates, two applications (with and
without the OTP requirement) and an RA, all calling one server over mutual TLS as `serve` runs it.

Everything a well-formed call needs (account, password, credential, API key, a live activation
token, a prepared document, a certificate serial, a recovery code) is collected in ``seeds``, so
that generated calls also get past authentication and into the code behind it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field, replace

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.clock import SystemClock
from signserver.config import ServerConfig, TlsConfig
from signserver.grpc_api.server import bootstrap, served_config
from signserver.hsm.algorithms import HashAlgorithm
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol, service_with, share_stamp_fonts
from tests.grpc_api.conftest import ServerThread

PEM = serialization.Encoding.PEM
# Statuses a call must never end with, whatever the client sent.
SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
AUTHORIZED_DIGEST = hashlib.sha256(b"a digest the holder authorised").digest()


def fuzz_settings(max_examples: int) -> settings:
    """Bounded runs, no example database in the tree, and the seed printed on a failure so that
    it can be replayed with @reproduce_failure. FUZZ_SCALE=10 in the environment runs ten times
    as many examples, for a longer search than the suite's."""
    scale = float(os.environ.get("FUZZ_SCALE", "1"))
    return settings(max_examples=max(1, round(max_examples * scale)), deadline=None, database=None, derandomize=False, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example], report_multiple_bugs=False)


# Odd values of JSON for the HTTP APIs' fuzz tests: what no schema expects, in every type.
ODD_TEXT = ["", " ", "0", "-1", "NaN", "\x00", "\u202e", "數碼簽署", "😀" * 64, "a" * 1025, "../../etc/passwd",
            "%s%n", "' OR 1=1 --", "Etc/GMT+99", "America", "x" * 300, "AAAA", "!!!!", "====", "null"]
INTEGER_EDGES = [0, 1, -1, 2, 600, 601, 2**31 - 1, 2**31, -(2**31), 2**63 - 1, 2**63, -(2**63), 2**64, 10**30]
ODD_JSON = st.one_of(st.none(), st.booleans(), st.sampled_from(INTEGER_EDGES), st.just(1e308), st.just(-0.0),
                     st.sampled_from(ODD_TEXT), st.just("x" * 200_000), st.just([]), st.just({}),
                     st.lists(st.sampled_from(ODD_TEXT), max_size=3),
                     st.dictionaries(st.sampled_from(ODD_TEXT), st.sampled_from(ODD_TEXT), max_size=2))


def weighted(*choices: tuple[st.SearchStrategy, int]) -> st.SearchStrategy:
    """One of the strategies, each drawn as often as its weight says (``one_of`` gives every
    distinct branch the same chance, however often it is listed)."""
    expanded = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.sampled_from(range(len(expanded))).flatmap(lambda index: expanded[index])


class ErrorRecords(logging.Handler):
    """Collects the records at ERROR and above written in this process."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def logged_errors() -> ErrorRecords:
    """What the servers of this process log at ERROR and above (the root logger's: asyncio's own
    complaints count too); a test clears ``records`` before each example."""
    handler = ErrorRecords()
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@dataclass
class Caller:
    name: str
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]


@dataclass
class FuzzWorld:
    service: object
    server: ServerThread
    callers: list[Caller]
    seeds: dict[str, list] = field(default_factory=dict)  # field name -> realistic values
    otp_seed: str = ""  # the holder's, for OTPs valid now
    # A holder the message fuzzer never names: its generated calls change the named holders'
    # passwords and lock them, and the document tests need one that still signs.
    document_signer: tuple[str, str] = ("", "")  # account, credential id
    documents: dict[str, bytes] = field(default_factory=dict)

    def assert_serving(self) -> None:
        """The server still answers, and says it serves, on every caller's connection."""
        for caller in self.callers:
            answer = health_pb2_grpc.HealthStub(caller.channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def _client(service, profile: str, name: str) -> tuple[bytes, bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate(profile, name, key.public_key(), "operator:test")
    key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fingerprint = hashlib.sha256(issued.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return issued.certificate.public_bytes(PEM), key_pem, fingerprint


def _channel(server: ServerThread, certificate: bytes, key: bytes) -> grpc.Channel:
    root = server.config.tls.cert_file.read_bytes() + server.config.tls.client_ca_file.read_bytes()
    credentials = grpc.ssl_channel_credentials(root, private_key=key, certificate_chain=certificate)
    return grpc.secure_channel(f"localhost:{server.port}", credentials,
                               options=[("grpc.max_send_message_length", 8 * 1024 * 1024),
                                        ("grpc.max_receive_message_length", 8 * 1024 * 1024)])


def _sign(service, app, created, data: bytes) -> bytes:
    out = io.BytesIO()
    service.pades.sign_pdf(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                           io.BytesIO(data), out, PadesLevel.B_T, StampOptions())
    return out.getvalue()


@pytest.fixture(scope="package")
def fuzz_world(config, tmp_path_factory, font_cache):
    state = tmp_path_factory.mktemp("fuzz")
    share_stamp_fonts(state, font_cache)
    tls = TlsConfig(cert_file=state / "tls" / "server.pem", key_file=state / "tls" / "server-key.pem",
                    client_ca_file=None, explicit=False, mutual=True)
    raw = replace(config, state_dir=state, tls=tls, server=ServerConfig("127.0.0.1:0", False))
    # Real time (TLS checks certificates against it); a lock threshold high enough that generated
    # wrong passwords for the real account do not lock it for the rest of the run.
    service = service_with(raw, state / "signserver.db", SystemClock(),
                           accounts=replace(config.accounts, lock_threshold=100))
    bootstrap(raw, service)
    holder, otp_seed = enrol(service, holder_name="翁心 Weng Sam LUZIA KUAN", kind=AccountKind.CORPORATE,
                      organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", holder.account.username), "ra:test")
    ra_holder, _ = enrol(service, holder_name="Lei Ka Io", kind=AccountKind.GOVERNMENT, organisation="DSAJ")
    signer, _ = enrol(service, holder_name="Chan Tai Man", kind=AccountKind.CORPORATE, organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", signer.account.username), "ra:test")
    ra_certificate = service.ca.issue(CertificateRequest("cloud-signature-government", ra_holder.account.username),
                                      "ra:test")
    plain_app, plain_key = service.applications.create("fuzz-app", otp_required=False)
    otp_app, otp_key = service.applications.create("fuzz-otp-app", otp_required=True)
    token = service.signer.authorize(plain_app, holder.account.username, Secret(PASSWORD), None,
                                     holder.credential.id, HashAlgorithm.SHA256, [AUTHORIZED_DIGEST] * 1).token
    documents = {"sample": sample_pdf(1), "pages": sample_pdf(4)}
    documents["signed"] = _sign(service, plain_app, holder, documents["sample"])
    pending = service.pades.prepare_pdf(plain_app, holder.credential.id, io.BytesIO(documents["pages"]),
                                        PadesLevel.B_B, StampOptions())

    with ServerThread(served_config(raw), service) as server:
        callers = []
        for name, app_name, api_key, profile in (("plain-app", "fuzz-app", plain_key, "client-asp"),
                                                 ("otp-app", "fuzz-otp-app", otp_key, "client-asp"),
                                                 ("ra", None, None, "client-ra")):
            certificate, key, fingerprint = _client(service, profile, f"fuzz-{name}")
            if app_name:
                service.applications.set_client_certificate(app_name, fingerprint)
            callers.append(Caller(name, _channel(server, certificate, key),
                                  (("x-api-key", api_key),) if api_key else ()))
        world = FuzzWorld(service, server, callers, documents=documents, otp_seed=otp_seed,
                          document_signer=(signer.account.username, signer.credential.id))
        world.seeds = {
            "account": [holder.account.username, ra_holder.account.username],
            "password": [PASSWORD], "current_password": [PASSWORD],
            "credential_id": [holder.credential.id, ra_holder.credential.id],
            "activation_token": [token],
            "document_id": [pending.id],
            "digests": [AUTHORIZED_DIGEST],
            "serial": [ra_certificate.serial],
            "recovery_code": [ra_holder.recovery_code],
            "level": ["B-B", "B-T", "b_lt", "LTA"],
            "signature_algorithm": ["ecdsa-sha256", "rsa-pss-sha256", "ed25519"],
            "profile": ["cloud-signature-government", "qualified-corporate", "encryption-government"],
            "kind": ["personal", "corporate", "government"],
            "key_algorithm": ["ec-p256", "ed25519"],
            "reason": ["keyCompromise", "superseded"],
            "emails": ["holder@example.mo"],
            "time_zone": ["Asia/Macau", "UTC", "Etc/GMT+14"],
            "chunk": list(documents.values()),
        }
        try:
            yield world
        finally:
            for caller in callers:
                caller.channel.close()
