"""PAdES signing: every level validates with pyHanko, poppler's pdfsig and OpenSSL."""

from __future__ import annotations

import io
import subprocess

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from tests.conftest import PASSWORD


def sign(world, data: bytes, level=PadesLevel.B_LT, stamp: StampOptions | None = None) -> bytes:
    service, app, created, _ = world
    out = io.BytesIO()
    service.pades.sign_pdf(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                           io.BytesIO(data), out, level, stamp or StampOptions())
    return out.getvalue()


def pdfsig(path) -> str:
    result = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


@pytest.mark.parametrize("level", list(PadesLevel), ids=lambda l: l.value)
def test_every_level_validates(pades_world, tmp_path, level):
    service = pades_world[0]
    signed = sign(pades_world, sample_pdf(2), level)
    reports = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert len(reports) == 1
    report = reports[0]
    assert report.intact and report.valid and report.trusted, report.summary
    assert report.level == level.value
    assert report.signer.endswith("Weng Sam LUZIA KUAN") or "Weng Sam LUZIA KUAN" in report.signer
    assert (report.timestamp is not None) == level.timestamped

    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    issuing, root = service.ca.chain()
    out = pdfsig(path)
    assert "Signature is Valid." in out, out
    assert "ETSI.CAdES.detached" in out

    # OpenSSL checks the CMS itself over the signed byte ranges.
    signature = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    (tmp_path / "sig.der").write_bytes(
        cms.ContentInfo({"content_type": "signed_data", "content": signature.signed_data}).dump())
    start, length, second, second_length = signature.byte_range
    (tmp_path / "content.bin").write_bytes(signed[start:start + length] + signed[second:second + second_length])
    (tmp_path / "ca.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (issuing, root)))
    result = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
                             "-content", str(tmp_path / "content.bin"), "-CAfile", str(tmp_path / "ca.pem"),
                             "-purpose", "any", "-out", "/dev/null"], capture_output=True, text=True)
    assert result.returncode == 0 and "Verification successful" in result.stderr, result.stderr
