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
from signserver.http.csc.errors import install_error_handlers
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
    install_error_handlers(app)
    app.include_router(info.router, prefix=V2_PREFIX)
    app.include_router(login.router, prefix=V2_PREFIX)
    app.include_router(login.oauth2_router)
    app.include_router(credentials.router, prefix=V2_PREFIX)
    app.include_router(signatures.router, prefix=V2_PREFIX)
    app.include_router(documents.router, prefix=V2_PREFIX)
    app.include_router(v1.router, prefix=V1_PREFIX)
    app.add_middleware(BodyLimit, limit=body_limit(context.service.config.pades.max_document_mb))
    app.add_middleware(NoStore)  # every answer of those paths, whoever gives it
    app.add_middleware(CallMetrics, front="csc")  # outermost: every call, refusals at the gate included
    return app
