"""pyHanko's own CSCSigner, unmodified, signs a PDF through the v1 paths with the hashes bound to
the SAD (SCAL 2); pyHanko's validator and poppler's pdfsig accept the result."""

from __future__ import annotations

import asyncio
import io
import ssl
import subprocess

import aiohttp
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.signers.csc_signer import (
    CSCAuthorizationInfo,
    CSCAuthorizationManager,
    CSCServiceSessionInfo,
    CSCSigner,
    fetch_certs_in_csc_credential,
)
from pyhanko.keys import load_cert_from_pemder
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from signserver.pades.sample import sample_pdf
from tests.conftest import have
from tests.csc.conftest import ca_root, write_pem


class HolderAuthorization(CSCAuthorizationManager):
    """Asks credentials/authorize for exactly the hashes about to be signed, with the holder's
    password (PIN) and a fresh OTP: what an application's authorisation manager does."""

    def __init__(self, session_info, credential_info, http: aiohttp.ClientSession, holder):
        super().__init__(session_info, credential_info)
        self._http = http
        self._holder = holder
        self.requests: list[dict] = []

    async def authorize_signature(self, hash_b64s: list[str]) -> CSCAuthorizationInfo:
        request = self.format_csc_auth_request(pin=self._holder.password, otp=self._holder.otp(),
                                               hash_b64s=hash_b64s)
        self.requests.append(request)
        async with self._http.post(self.csc_session_info.endpoint_url("credentials/authorize"), json=request,
                                   headers=self.auth_headers, raise_for_status=True) as response:
            return self.parse_csc_auth_response(await response.json())


async def sign_with_pyhanko(csc_server, access_token, holder, pdf: bytes):
    trust = ssl.create_default_context(cafile=str(csc_server.tls.cert_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
        session_info = CSCServiceSessionInfo(service_url=csc_server.url, credential_id=holder.credential_id,
                                             oauth_token=access_token, api_ver="v1")
        credential_info = await fetch_certs_in_csc_credential(http, session_info)
        authorization = HolderAuthorization(session_info, credential_info, http, holder)
        signer = CSCSigner(http, authorization)
        out = io.BytesIO()
        await signers.async_sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                                     signers.PdfSignatureMetadata(field_name="Signature1"), signer=signer,
                                     output=out)
        return out.getvalue(), credential_info, authorization


def test_pyhanko_csc_signer_signs_a_pdf_that_validates(csc_server, csc_service, access_token, holder, tmp_path):
    signed, credential_info, authorization = asyncio.run(
        sign_with_pyhanko(csc_server, access_token, holder, sample_pdf(1)))

    assert credential_info.hash_pinning_required  # SCAL 2
    assert credential_info.signing_cert.dump() == holder.certificate.public_bytes(Encoding.DER)
    assert len(authorization.requests) == 1 and len(authorization.requests[0]["hash"]) == 1

    root = load_cert_from_pemder(str(write_pem(tmp_path / "root.pem", ca_root(csc_service))))
    embedded = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    status = validate_pdf_signature(embedded, ValidationContext(trust_roots=[root]))
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.signing_cert.dump() == credential_info.signing_cert.dump()

    if not have("pdfsig"):
        pytest.skip("poppler-utils' pdfsig is not installed")
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    # pdfsig checks the signature over the signed bytes; the chain's trust is pyHanko's check above.
    result = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert "Signature is Valid." in out and "Total document signed" in out, out
