"""info: what this CSC service is and which methods it offers (v2; v1 in v1.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from signserver import __version__
from signserver.http.csc import algorithms

router = APIRouter(tags=["info"])

SERVICE_NAME = "signserver"
AUTH_TYPES = ["basic", "oauth2client"]  # HTTP Basic with an API key (auth/login), OAuth 2.0 client credentials
# The methods a client may call; credentials/extendTransaction is not offered (see credentials.py).
V2_METHODS = ["auth/login", "auth/revoke", "credentials/list", "credentials/info", "credentials/authorize",
              "signatures/signHash", "signatures/signDoc", "signatures/timestamp", "signatures/signPolling"]


class InfoRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    lang: str | None = None


def service_base(request: Request) -> str:
    """The service's public address, without a trailing slash: ``[csc] public_url``, else https://
    and the listen address. Never the request's Host header, which any client may set: an answer
    built from it would hand the next client (through a cache, a proxy) someone else's URL."""
    return request.app.state.csc.service.config.csc.base_url()


WORKER_HEADER = "X-Signserver-Worker"  # which process answered: load tests spread their connections by it


@router.post("/info", summary="Information about the service")
async def info(request: Request, response: Response, body: InfoRequest | None = None) -> dict:
    """Needs no authentication (CSC v2, section 11.1)."""
    response.headers[WORKER_HEADER] = str(request.app.state.csc.worker)
    return {
        "specs": "2.0.0.0",
        "name": SERVICE_NAME,
        "logo": f"{service_base(request)}/csc/v2/openapi.json",
        "region": "MO",
        "lang": "en-US",
        "description": f"signserver {__version__}: remote signing with keys in an HSM",
        "authType": AUTH_TYPES,
        "oauth2": service_base(request),
        "oauth2Issuer": service_base(request),
        "asynchronousOperationMode": True,
        "methods": V2_METHODS,
        "validationInfo": False,
        "signAlgorithms": {"algos": sorted({*algorithms.SIGNATURE_OIDS, algorithms.RSASSA_PSS}), "algoParams": []},
        "signature_formats": {"formats": ["P"], "envelope_properties": [["Revision"]]},  # approval signatures only
        "conformance_levels": ["Ades-B-B", "Ades-B-T", "Ades-B-LT", "Ades-B-LTA"],
    }
