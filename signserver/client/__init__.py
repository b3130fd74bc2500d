"""A typed client of signserver's gRPC API for applications: list credentials, authorise, sign
hashes, sign a PDF in one call or two steps, verify a PDF.

    from signserver.client import SignServerClient

    with SignServerClient("signserver.example.mo:50051", root_certificates=ca_pem,
                          client_certificate=cert_pem, client_key=key_pem) as client:
        client.sign_pdf("in.pdf", "out.pdf", account=..., password=..., otp=..., credential_id=...)

A registration authority uses CertificateClient (CertificateService, with an RA certificate).
"""

from signserver.client.certificates import CertificateClient
from signserver.client.client import SignServerClient
from signserver.client.errors import (
    AccountDisabled,
    AccountLocked,
    ActivationRefused,
    AlreadyExists,
    AlreadyRenewed,
    AuthenticationRefused,
    CertificateRefused,
    CredentialUnusable,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionRefused,
    RequestReplayed,
    ServerBusy,
    ServerNotTrusted,
    ServerUnreachable,
    SignServerClientError,
)
from signserver.client.models import (
    Authorization,
    CertificatePage,
    CertificateRecord,
    Credential,
    CredentialInfo,
    Evidence,
    HolderIdentity,
    HolderStanding,
    NewAccount,
    NewAccountResult,
    PdfOptions,
    PreparedSignature,
    SignatureReport,
    SignedDocument,
    Stamp,
    Verification,
)

__all__ = [
    "SignServerClient", "CertificateClient",
    "SignServerClientError", "AuthenticationRefused", "AccountLocked", "AccountDisabled", "PermissionRefused",
    "ActivationRefused",
    "NotFound", "ServerBusy", "InvalidArgument", "FieldViolation", "AlreadyExists", "CertificateRefused",
    "AlreadyRenewed", "RequestReplayed", "ServerUnreachable", "ServerNotTrusted", "DeadlineExceeded",
    "CredentialUnusable",
    "CertificatePage", "CertificateRecord", "Evidence", "HolderIdentity", "HolderStanding", "NewAccount", "NewAccountResult",
    "Authorization", "Credential", "CredentialInfo", "PdfOptions", "PreparedSignature", "SignatureReport",
    "SignedDocument", "Stamp", "Verification",
]
