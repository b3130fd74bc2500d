"""`signserver serve` with TLS files it cannot use refuses to start, at once and naming the setting:
gRPC given them said only that it could not bind the address, in a traceback, and every worker
was started again and again."""

from __future__ import annotations

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env

CONFIGURATION_ERROR = 78


def serve(state_dir, cert, key) -> subprocess.CompletedProcess:
    env = cli_env(state_dir, SIGNSERVER_SERVER_LISTEN="127.0.0.1:0", SIGNSERVER_HTTP_LISTEN="127.0.0.1:0",
                  SIGNSERVER_CSC_LISTEN="127.0.0.1:0", SIGNSERVER_TLS_CERT_FILE=str(cert),
                  SIGNSERVER_TLS_KEY_FILE=str(key))
    # Before the change the workers started over and over: the timeout ends such a run, and fails the test.
    return cli_forkserver.run([str(SIGNSERVER), "serve", "--workers", "2"], env=env, capture_output=True, text=True,
                              timeout=60)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("case, setting", [("garbage certificate", "tls.cert_file"), ("garbage key", "tls.key_file"),
                                           ("another certificate's key", "tls.key_file")])
def test_tls_files_it_cannot_use_are_refused_at_start(state_dir, tmp_path, case, setting):
    key = ec.generate_private_key(ec.SECP256R1())
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(b"not a certificate" if case == "garbage certificate" else self_signed(key))
    key_file.write_bytes({"garbage key": b"not a key",
                          "another certificate's key": pem_key(ec.generate_private_key(ec.SECP256R1()))
                          }.get(case, pem_key(key)))
    result = serve(state_dir, cert_file, key_file)
    assert result.returncode == CONFIGURATION_ERROR, result.stderr[-3000:]
    assert setting in result.stderr and "Traceback" not in result.stderr and "serving on" not in result.stderr
