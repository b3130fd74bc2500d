"""The CSC 1.0.4 paths and shapes that existing clients speak (pyHanko's CSCSigner among them):
the same methods as v2, through the same functions, with v1's field names."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from signserver.accounts.model import Application
from signserver.errors import InvalidArgument
from signserver.http.csc import algorithms, credentials, info, login, signatures
from signserver.http.csc.auth import calling_application
from signserver.http.csc.context import CscContext, csc_context
from signserver.http.csc.credentials import MAX_ID, CscRequest

router = APIRouter(tags=["CSC 1.0.4"])

V1_METHODS = ["auth/login", "auth/revoke", "credentials/list", "credentials/info", "credentials/authorize",
              "signatures/signHash"]


class InfoRequestV1(CscRequest):
    lang: str | None = None


class ListRequestV1(CscRequest):
    userID: str | None = Field(default=None, max_length=MAX_ID)
    maxResults: int | None = Field(default=None, ge=1)
    pageToken: str | None = None
    clientData: str | None = None


class AuthorizeRequestV1(CscRequest):
    credentialID: str = Field(min_length=1, max_length=MAX_ID)
    numSignatures: int = Field(ge=1)
    hash: list[str] | None = None
    PIN: str | None = Field(default=None, max_length=1024)
    OTP: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    clientData: str | None = None


class SignHashRequestV1(CscRequest):
    credentialID: str = Field(min_length=1, max_length=MAX_ID)
    SAD: str = Field(min_length=1, max_length=512)
    hash: list[str]
    hashAlgo: str | None = Field(default=None, max_length=64)
    signAlgo: str = Field(min_length=1, max_length=64)
    signAlgoParams: str | None = Field(default=None, max_length=1024)
    clientData: str | None = None


@router.post("/info")
async def info_v1(request: Request, body: InfoRequestV1 | None = None) -> dict:
    base = info.service_base(request)  # from configuration, never from the request's Host
    return {"specs": "1.0.4.0", "name": info.SERVICE_NAME, "logo": f"{base}/csc/v2/openapi.json", "region": "MO",
            "lang": "en-US", "description": "signserver: remote signing with keys in an HSM",
            "authType": info.AUTH_TYPES, "oauth2": base, "methods": V1_METHODS}


@router.post("/auth/login")
async def login_v1(request: Request, body: login.LoginRequest | None = None) -> Response:
    return await login.login(request, body)


@router.post("/auth/revoke", status_code=204, response_class=Response)
async def revoke_v1(body: login.RevokeRequest, application: Application = Depends(calling_application),
                    context: CscContext = Depends(csc_context)) -> Response:
    return await login.revoke(body, application, context)


@router.post("/credentials/list")
async def list_v1(body: ListRequestV1, application: Application = Depends(calling_application),
                  context: CscContext = Depends(csc_context)) -> dict:
    """Raises: as v2's credentials/list."""
    listed = await credentials.list_credentials(credentials.ListRequest(userID=body.userID), application, context)
    ids = listed["credentialIDs"][:body.maxResults] if body.maxResults else listed["credentialIDs"]
    return {"credentialIDs": ids}


@router.post("/credentials/info")
async def info_credential_v1(body: credentials.InfoRequest, application: Application = Depends(calling_application),
                             context: CscContext = Depends(csc_context)) -> dict:
    """CSC 1.0.4's shape: authMode, and the PIN and OTP descriptors at the top level.

    Raises: as v2's credentials/info.
    """
    wanted = credentials.certificates_wanted(body.certificates)
    details, status = await context.hsm.run(credentials.credential_details, context.service, application,
                                            body.credentialID)
    credential = details.info.credential
    answer = {"description": credential.description or f"signing credential of {credential.username}",
              "key": credentials.key_body(details),
              "authMode": "explicit",
              "PIN": {"presence": "true", "format": "A", "label": "Password",
                      "description": "The signing password of the credential's holder"},
              "SCAL": "2", "multisign": context.service.signer.max_signatures, "lang": "en-US"}
    cert = credentials.certificate_body(details, status, wanted, body.certInfo)
    if cert is not None:
        answer["cert"] = cert
    if application.otp_required:
        answer["OTP"] = {"presence": "true", "type": "offline", "format": "N", "label": "OTP", "ID": "totp",
                         "provider": "signserver", "description": "The one-time password of the holder's OTP app"}
    return answer


@router.post("/credentials/authorize")
async def authorize_v1(body: AuthorizeRequestV1, application: Application = Depends(calling_application),
                       context: CscContext = Depends(csc_context)) -> dict:
    """CSC 1.0.4 names no digest algorithm here: the hashes' length tells it.

    Raises: as v2's credentials/authorize.
    """
    digests = credentials.decode_hashes(body.hash, "hash", context.service.signer.max_signatures)
    issued = await credentials.authorize(context, application, body.credentialID, body.numSignatures, digests,
                                         algorithms.hash_of_length(digests),
                                         credentials.checked_factors(body.PIN, body.OTP))
    return {"SAD": issued.token, "expiresIn": credentials.expires_in(context, issued)}


@router.post("/credentials/extendTransaction")
async def extend_v1(application: Application = Depends(calling_application)) -> dict:
    """Raises: InvalidArgument, always (see v2's)."""
    raise InvalidArgument(credentials.EXTEND_REFUSED)


@router.post("/signatures/signHash")
async def sign_hash_v1(body: SignHashRequestV1, application: Application = Depends(calling_application),
                       context: CscContext = Depends(csc_context)) -> dict:
    """Raises: as v2's signatures/signHash."""
    digests = credentials.decode_hashes(body.hash, "hash", context.service.signer.max_signatures)
    algorithm = algorithms.signature_algorithm(body.signAlgo, body.hashAlgo,
                                               signatures.sign_algo_params(body.signAlgoParams))
    return {"signatures": await signatures.sign_hashes(context, application, body.credentialID, body.SAD, algorithm,
                                                       digests)}
