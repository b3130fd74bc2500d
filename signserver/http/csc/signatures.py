"""signatures/signHash (CSC API v2; the v1 shape in v1.py): spend a SAD on the hashes it was
issued for, and sign them in the HSM, with exactly the algorithm asked (RSASSA-PSS is signed as
PSS, with its parameters' digest, MGF1 and salt; an algorithm or parameters the HSM does not sign
with are refused before the SAD is spent)."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from signserver.accounts.model import Application
from signserver.errors import InvalidArgument
from signserver.hsm.algorithms import SignatureAlgorithm
from signserver.http.call_metrics import method_label
from signserver.http.csc import algorithms
from signserver.http.csc.auth import calling_application
from signserver.http.csc.context import CscContext, csc_context
from signserver.http.csc.credentials import MAX_ID, CscRequest, b64, check_signature_qualifier, decode_hashes
from signserver.http.csc.errors import credential_lookup
from signserver.http.csc.operations import keep_seconds, start_operation
from signserver.secret import Secret

router = APIRouter(tags=["signatures"])

# A signHash of this many hashes is short enough (about 2 ms with RSA-2048) to run on the event
# loop when the HSM is free, as gRPC's SignHash does (see BlockingCalls.run_short).
SHORT_CALL_DIGESTS = 4


class SignHashRequest(CscRequest):
    credentialID: str = Field(min_length=1, max_length=MAX_ID)
    SAD: str = Field(min_length=1, max_length=512)
    hashes: list[str]
    hashAlgorithmOID: str | None = Field(default=None, max_length=64)
    signAlgo: str = Field(min_length=1, max_length=64)
    signAlgoParams: str | None = Field(default=None, max_length=1024)
    signatureQualifier: str | None = Field(default=None, max_length=64)
    operationMode: Literal["S", "A"] = "S"
    validity_period: int | None = Field(default=None, ge=1)
    response_uri: str | None = None
    clientData: str | None = None


def sign_algo_params(value: str | None) -> bytes | None:
    """Raises: InvalidArgument: not base64."""
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("signAlgoParams is not base64") from None


async def sign_hashes(context: CscContext, application: Application, credential_id: str, sad: str,
                      algorithm: SignatureAlgorithm, digests: list[bytes]) -> list[str]:
    """Spend the SAD on the digests and sign them; the signatures in base64, in order.

    Raises: InvalidArgument, UnsupportedAlgorithm, ActivationRefused, NotFound,
        CredentialUnusable, HsmError (see HashSigner.sign_hashes).
    """
    run = context.hsm.run_short if len(digests) <= SHORT_CALL_DIGESTS else context.hsm.run
    with credential_lookup():
        signatures = await run(context.service.signer.sign_hashes, application, credential_id=credential_id,
                               token=Secret(sad), algorithm=algorithm, digests=digests)
    return [b64(s) for s in signatures]


@router.post("/signatures/signHash", summary="Sign hashes with a credential and its SAD")
async def sign_hash(body: SignHashRequest, http: Request,
                    application: Application = Depends(calling_application),
                    context: CscContext = Depends(csc_context)) -> dict:
    """signAlgo (with hashAlgorithmOID where it names only the key's algorithm, and
    signAlgoParams for RSASSA-PSS) chooses the signature algorithm; the SAD must have been issued
    for this credential, this application and these hashes, each signed once. With
    ``operationMode`` "A" the answer is a ``responseID`` for signatures/signPolling.

    Raises: as :func:`sign_hashes`; InvalidArgument (a ``response_uri``: no notification is
        sent, the outcome is polled; a signatureQualifier the service does not meet).
    """
    check_signature_qualifier(body.signatureQualifier)
    if body.response_uri:
        raise InvalidArgument("response_uri is not served: poll with signatures/signPolling")
    digests = decode_hashes(body.hashes, "hashes", context.service.signer.max_signatures)
    algorithm = algorithms.signature_algorithm(body.signAlgo, body.hashAlgorithmOID,
                                               sign_algo_params(body.signAlgoParams))

    async def signed() -> dict:
        return {"signatures": await sign_hashes(context, application, body.credentialID, body.SAD, algorithm,
                                                digests)}

    if body.operationMode == "A":
        return await start_operation(context, application, signed, keep_seconds(body.validity_period),
                                     method=method_label(http.scope))
    if body.validity_period is not None:
        raise InvalidArgument('validity_period applies to operationMode "A" only')
    return await signed()
