"""The CSC API's ASGI app: its routes, its error answers and its OpenAPI document.

Routes are written relative to the API's version: the v2 routers (this package's credentials,
signatures, documents and the auth endpoints) are mounted under ``/csc/v2``, the v1 paths that
pyHanko's CSCSigner speaks under ``/csc/v1``, and the OAuth 2.0 token endpoint at
``/oauth2/token``.
"""

from __future__ import annotations

from fastapi import FastAPI

from signserver import __version__
from signserver.http.call_metrics import CallMetrics
from signserver.http.csc import credentials, documents, info, login, signatures, v1
from signserver.http.csc.context import CscContext
from signserver.http.csc.errors import UNEXPECTED, install_error_handlers
from signserver.http.csc.limits import BodyLimit, body_limit
from signserver.http.csc.no_store import NoStore

V2_PREFIX = "/csc/v2"
V1_PREFIX = "/csc/v1"
OPENAPI_PATH = f"{V2_PREFIX}/openapi.json"


def create_csc_app(context: CscContext) -> FastAPI:
    """The app for one worker; ``context`` is kept in ``app.state.csc`` for the endpoints."""
    app = FastAPI(title="signserver: Cloud Signature Consortium API", version=__version__,
                  description="The remote-signing API of the Cloud Signature Consortium (v2), and the v1 "
                              "paths of CSC 1.0.4 that existing clients speak.",
                  openapi_url=OPENAPI_PATH, docs_url=None, redoc_url=None)
    app.state.csc = context
    install_error_handlers(app, faults=context.faults)
    app.include_router(info.router, prefix=V2_PREFIX)
    app.include_router(login.router, prefix=V2_PREFIX)
    app.include_router(login.oauth2_router)
    app.include_router(credentials.router, prefix=V2_PREFIX)
    app.include_router(signatures.router, prefix=V2_PREFIX)
    app.include_router(documents.router, prefix=V2_PREFIX)
    app.include_router(v1.router, prefix=V1_PREFIX)
    app.add_middleware(BodyLimit, limit=body_limit(context.service.config.pades.max_document_mb))
    app.add_middleware(NoStore)  # every answer of those paths, whoever gives it
    # Outermost: every call, refusals at the gate included; a refusal by the reason its answer
    # carries, a fault no handler answered by the reason the answer to it carries.
    app.add_middleware(CallMetrics, front="csc", faults_refused_with=UNEXPECTED)
    app.openapi = lambda: csc_openapi(app)
    return app


CSC_ERROR_SCHEMA = {
    "type": "object", "title": "CscError", "required": ["error", "error_description"],
    "properties": {
        "error": {"type": "string", "description": "the CSC API's (OAuth 2.0's) code: invalid_request, ..."},
        "error_description": {"type": "string", "description": "what was wrong, for people"},
        "error_reason": {"type": "string", "description": "signserver's stable reason, e.g. ACTIVATION_REFUSED"},
    }}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an access token from auth/login or oauth2/token"},
    "basic": {"type": "http", "scheme": "basic", "description": "the application's name and API key"},
    "clientCertificate": {"type": "mutualTLS", "description": "the application's registered client certificate"},
}
# Every other path wants the caller's access token (or its client certificate).
OPEN_PATHS = (f"{V2_PREFIX}/info", f"{V1_PREFIX}/info")
LOGIN_PATHS = (f"{V2_PREFIX}/auth/login", f"{V1_PREFIX}/auth/login", login.TOKEN_PATH)


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CscError"}}}}


def csc_openapi(app: FastAPI) -> dict:
    """FastAPI's document of ``app``, told what the front answers: refusals in CSC's shape with
    400 (the error handlers never answer FastAPI's 422), 401 where a caller must be known, and
    how each route is authenticated. Built once per app."""
    if app.openapi_schema:
        return app.openapi_schema
    document = FastAPI.openapi(app)
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["CscError"] = CSC_ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["400"] = _error(responses.get("400", {}).get(
                "description", "invalid_request: a parameter missing, of the wrong type or not valid"))
            if path in LOGIN_PATHS:
                operation["security"] = [{"basic": []}, {"clientCertificate": []}]
                responses["401"] = _error("invalid_client: the application's credentials are not right")
            elif path not in OPEN_PATHS:
                operation["security"] = [{"bearer": []}, {"clientCertificate": []}]
                responses["401"] = _error("invalid_token: no access token, or an unknown, expired or revoked one")
    return document
