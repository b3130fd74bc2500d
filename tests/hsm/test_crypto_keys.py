"""HSM keys behind cryptography's private-key interface: certificates build and verify unchanged."""

from __future__ import annotations

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.crypto_keys import hsm_private_key
from tests.conftest import require_key_algorithm

pytestmark = pytest.mark.one_store  # touches no store

NOW = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.timezone.utc)


def self_signed(private, algorithm: KeyAlgorithm, pss: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"HSM {algorithm.value}")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(private.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    digest = None if algorithm is KeyAlgorithm.ED25519 else hashes.SHA256()
    if pss:
        return builder.sign(private, digest, rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()),
                                                                      padding.PSS.DIGEST_LENGTH))
    return builder.sign(private, digest)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P256,
                                       KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519], ids=lambda a: a.value)
def test_certificate_builder_signs_with_an_hsm_key(keystore, capabilities, label, algorithm, tmp_path):
    require_key_algorithm(capabilities, algorithm)
    key = keystore.generate(algorithm, label)
    private = hsm_private_key(keystore, key.key_id)
    certificate = self_signed(private, algorithm)
    certificate.verify_directly_issued_by(certificate)

    path = tmp_path / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(path), "-attime",
                             str(int(NOW.timestamp()) + 60), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rsa_pss_certificates(keystore, label):
    key = keystore.generate(KeyAlgorithm.RSA_2048, label)
    certificate = self_signed(hsm_private_key(keystore, key.key_id), KeyAlgorithm.RSA_2048, pss=True)
    certificate.verify_directly_issued_by(certificate)


def test_the_private_key_cannot_be_exported(keystore, label, token_key_algorithm):
    key = keystore.generate(token_key_algorithm, label)
    private = hsm_private_key(keystore, key.key_id)
    with pytest.raises(CryptographyUnsupported):
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    with pytest.raises(CryptographyUnsupported):
        private.private_numbers()
