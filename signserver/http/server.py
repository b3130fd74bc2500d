"""CaHttpServer: what relying parties fetch over plain HTTP (RFC 5280 and RFC 6960 expect it).

    GET  /crl/issuing.crl, /crl/root.crl        application/pkix-crl
    GET  /ca/issuing.crt, /ca/root.crt          application/pkix-cert
    POST /ocsp                                  application/ocsp-request -> ocsp-response
    POST /tsa                                   application/timestamp-query -> timestamp-reply (RFC 3161)
    GET  /ocsp/<base64 of the DER request>      (RFC 6960 appendix A.1)
    GET  /cps                                   the certificate policies, as text

Everything it serves is public and signed; it changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.serialization import Encoding

from signserver.ca.profiles import all_profiles
from signserver.config import split_address
from signserver.errors import NotFound, SignServerError
from signserver.service import SignService

log = logging.getLogger(__name__)

MAX_OCSP_REQUEST = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "signserver"
    service: SignService  # set on the class made for each server

    def do_GET(self) -> None:  # noqa: N802 - the http.server convention
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path in ("/crl/issuing.crl", "/crl/root.crl"):
                self._send(self.service.ca.crl(path.split("/")[2].split(".")[0]), "application/pkix-crl")
            elif path in ("/ca/issuing.crt", "/ca/root.crt"):
                issuing, root = self.service.ca.chain()
                certificate = issuing if path == "/ca/issuing.crt" else root
                self._send(certificate.public_bytes(Encoding.DER), "application/pkix-cert")
            elif path.startswith("/ocsp/"):
                # Standard base64 per RFC 6960; the URL-safe alphabet is accepted too.
                encoded = urllib.parse.unquote(path[len("/ocsp/"):]).replace("-", "+").replace("_", "/")
                try:
                    request = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
                except (binascii.Error, ValueError):
                    request = b""  # answered as a malformed request
                self._send(self.service.ca.ocsp(request), "application/ocsp-response")
            elif path == "/cps":
                self._send(_policy_statement(self.service).encode("utf-8"), "text/plain; charset=utf-8")
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except NotFound as exc:
            self.send_error(HTTPStatus.NOT_FOUND, str(exc))
        except SignServerError as exc:
            log.error("HTTP %s failed: %s", path, exc)
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)

    def do_POST(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/ocsp", "/ocsp/"):
            answer, content_type = self.service.ca.ocsp, "application/ocsp-response"
        elif path in ("/tsa", "/tsa/"):
            answer, content_type = self.service.pades.tsa.respond, "application/timestamp-reply"
        else:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_OCSP_REQUEST:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length else HTTPStatus.LENGTH_REQUIRED)
            return
        try:
            self._send(answer(self.rfile.read(length)), content_type)
        except NotFound as exc:
            self.send_error(HTTPStatus.NOT_FOUND, str(exc))
        except SignServerError as exc:
            log.error("%s failed: %s", path, exc)
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)


def _policy_statement(service: SignService) -> str:
    lines = [f"{service.config.ca.name}: certificate policies", ""]
    for profile in all_profiles():
        lines.append(f"{profile.policy_oid}  {profile.name}: {profile.title}")
    return "\n".join(lines) + "\n"


class _ReusePortServer(ThreadingHTTPServer):
    allow_reuse_port = True  # every worker process serves the same port


class CaHttpServer:
    """The HTTP endpoints in a background thread."""

    def __init__(self, service: SignService, listen: str):
        host, port = split_address(listen)
        handler = type("CaHandler", (_Handler,), {"service": service})
        self._server = _ReusePortServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()
        log.info("serving CRLs, OCSP and CA certificates on http://%s:%d", *self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
