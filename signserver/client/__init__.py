"""A typed client of signserver's gRPC API for applications: list credentials, authorise, sign
hashes, sign a PDF in one call or two steps, verify a PDF.

    from signserver.client import SignServerClient

    with SignServerClient("signserver.example.mo:50051", root_certificates=ca_pem,
                          client_certificate=cert_pem, client_key=key_pem) as client:
        client.sign_pdf("in.pdf", "out.pdf", account=..., password=..., otp=..., credential_id=...)
"""

from signserver.client.client import SignServerClient
from signserver.client.errors import (
    AccountLocked,
    ActivationRefused,
    AuthenticationRefused,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionRefused,
    ServerBusy,
    SignServerClientError,
)
from signserver.client.models import (
    Authorization,
    Credential,
    CredentialInfo,
    PdfOptions,
    PreparedSignature,
    SignatureReport,
    SignedDocument,
    Stamp,
    Verification,
)

__all__ = [
    "SignServerClient",
    "SignServerClientError", "AuthenticationRefused", "AccountLocked", "PermissionRefused", "ActivationRefused",
    "NotFound", "ServerBusy", "InvalidArgument", "FieldViolation",
    "Authorization", "Credential", "CredentialInfo", "PdfOptions", "PreparedSignature", "SignatureReport",
    "SignedDocument", "Stamp", "Verification",
]
