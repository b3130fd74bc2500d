"""The RA's client of the identity registry and its face comparison (docs/registry-contract.md).

The registry is a government service the RA reaches over HTTPS with JSON; the RA knows only the
contract, never which registry answers. Both calls are read-only, so a call that got no useful
answer (a timeout, a broken connection, a 5xx or 429) is sent again, with the same X-Request-Id,
after a growing pause, up to ``attempts`` times in all; then :class:`RegistryUnavailable` tells the
renewal to wait. A 4xx is an answer, never retried.

Logs and error messages carry an ID number masked (``*******(8)``) and never a photo's bytes.
"""

from __future__ import annotations

import base64
import datetime
import functools
import logging
import math
import random
import ssl
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from signserver.ra.errors import (IdentityNotFound, PhotoRefused, RegistryRejected, RegistryUnavailable,
                                  SettingsError)
from signserver.addresses import is_loopback

log = logging.getLogger(__name__)

LOOKUP_PATH = "/v1/identities/lookup"
COMPARE_PATH = "/v1/faces/compare"
MAX_PHOTO_BYTES = 10 * 1024 * 1024
# The media types the contract accepts, by the names a caller may give them, and their magic bytes.
MEDIA_TYPES = {"image/jpeg": "image/jpeg", "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg",
               "image/png": "image/png", "image/tiff": "image/tiff", "image/tif": "image/tiff"}
MAGIC_BYTES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
               (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))
# Pauses between attempts: BACKOFF_SECONDS, doubled each time, never above MAX_BACKOFF_SECONDS.
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class IdentityRecord:
    """An identity document as the registry holds it. ``issuing_region`` is ISO 3166 alpha-2
    ("MO" for Macau)."""

    id_type: str
    id_number: str
    name: str
    given_name: str
    surname: str
    birth_date: datetime.date
    expires: datetime.date
    issuing_region: str


def mask_id_number(id_number: str) -> str:
    """``id_number`` fit for a log line: all but its last three characters starred (all of them
    when it is shorter than seven)."""
    if len(id_number) < 7:
        return "*" * len(id_number)
    return "*" * (len(id_number) - 3) + id_number[-3:]


def photo_media_type(photo: bytes) -> str:
    """The media type ``photo``'s first bytes show: image/jpeg, image/png or image/tiff.

    Raises: PhotoRefused: the photo is empty, larger than MAX_PHOTO_BYTES, or none of those.
    """
    if not photo:
        raise PhotoRefused("the photo is empty")
    if len(photo) > MAX_PHOTO_BYTES:
        raise PhotoRefused(f"the photo is larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
    for magic, media_type in MAGIC_BYTES:
        if photo.startswith(magic):
            return media_type
    raise PhotoRefused("the photo is not a JPEG, PNG or TIFF image")


def checked_photo_type(photo: bytes, media_type: str) -> str:
    """The contract's name of ``media_type`` when ``photo`` is a photo the registry takes and
    ``media_type`` (image/jpeg, image/jpg, image/png, image/tiff...) is what its bytes are.

    Raises: PhotoRefused: another media type, a content that is not the media type, an empty photo
    or one above MAX_PHOTO_BYTES.
    """
    declared = MEDIA_TYPES.get(media_type.strip().lower())
    if declared is None:
        raise PhotoRefused(f"media type {media_type[:64]!r} is not JPEG, PNG or TIFF")
    actual = photo_media_type(photo)
    if actual != declared:
        raise PhotoRefused(f"the photo's content is {actual}, not {declared}")
    return declared


def read_api_key(path: Path) -> str:
    """The API key in ``path``: its first line that is neither blank nor a # comment.

    Raises: SettingsError: the file is unreadable or holds no key.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"registry API key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise SettingsError(f"registry API key file {path} holds no key")


def registry_ssl_context(ca: Path | None, client_files: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    """The TLS the registry is reached with: its certificate checked against ``ca`` (else the
    system's CAs) and the RA's ``client_files`` (certificate, key) presented when given; None when
    neither is given (the client's default: the system's CAs, no client certificate).

    Raises: SettingsError: a file cannot be read or is not PEM of the kind expected (the message
    names the setting, never a key's content).
    """
    if ca is None and client_files is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"ra.registry_ca: cannot use {ca} ({getattr(exc, 'strerror', None) or exc})") from None
    if client_files is not None:
        certificate, key = client_files
        try:
            context.load_cert_chain(str(certificate), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"ra.registry_client_cert / ra.registry_client_key: cannot use {certificate} and "
                                f"{key} ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    return context


@functools.cache
def system_tls() -> ssl.SSLContext:
    """The system's CAs (OpenSSL's default paths, SSL_CERT_FILE and SSL_CERT_DIR included), made
    once per process and shared by every client: a context of its own for each client cost tens of
    milliseconds of CPU, parsing a whole bundle of CAs again."""
    return ssl.create_default_context()


class RegistryClient:
    """The identity registry at ``base_url``: each HTTP exchange bounded by ``timeout_seconds``
    (connecting, sending, each wait for data), each call by ``attempts`` exchanges.

    ``ssl_context`` is the TLS the registry is reached with (its trusted CAs, and a client
    certificate when the registry asks for mutual TLS); None: the system's CAs. ``api_key`` is sent
    as ``Authorization: Bearer``; ``client_id`` names the RA in the registry's logs (X-Client-Id).
    ``sleep`` is how the client pauses between attempts (tests may pass their own). The usual
    proxy variables (HTTPS_PROXY, NO_PROXY) are honoured; redirects are not followed.
    Thread-safe; ``close()`` (or a ``with`` block) releases its connections.

    Raises (constructing): ValueError: a URL other than http(s), a timeout not above 0, fewer
    than 1 attempt, or a backoff below 0.
    """

    def __init__(self, base_url: str, *, timeout_seconds: float, attempts: int, ssl_context: ssl.SSLContext | None = None,
                 client_id: str = "", api_key: str = "", backoff_seconds: float = BACKOFF_SECONDS,
                 sleep: Callable[[float], None] = time.sleep):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"the registry URL must be http(s)://host[:port][/path], not {base_url!r}")
        if not timeout_seconds > 0:
            raise ValueError("timeout_seconds must be above 0")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not backoff_seconds >= 0:
            raise ValueError("backoff_seconds must not be below 0")
        if url.scheme == "http" and not is_loopback(url.hostname):
            log.warning("the identity registry at %s is reached without TLS: ID data cross the network in clear",
                        url.hostname)
        self.attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if client_id:
            headers["X-Client-Id"] = client_id
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=httpx.Timeout(timeout_seconds),
                                  verify=ssl_context if ssl_context is not None else system_tls(),
                                  follow_redirects=False)

    def close(self) -> None:
        """Release the client's connections."""
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch_identity(self, id_type: str, id_number: str, *, consent_reference: str) -> IdentityRecord:
        """The registry's record of the document ``id_type`` ``id_number``, fetched under the
        holder's consent ``consent_reference``.

        Raises: ValueError: an argument is empty. IdentityNotFound: the registry holds no such
        document. RegistryRejected: the registry refused the RA (credentials, a malformed
        request). RegistryUnavailable: no useful answer after the attempts, or an answer outside
        the contract.
        """
        _require_text(id_type=id_type, id_number=id_number, consent_reference=consent_reference)
        body = {"id_type": id_type, "id_number": id_number, "consent_reference": consent_reference}
        response = self._post(LOOKUP_PATH, body, what=f"the lookup of {id_type} {mask_id_number(id_number)}")
        answer = _json_object(response)
        try:
            record = IdentityRecord(
                **{name: _string(answer, name) for name in
                   ("id_type", "id_number", "name", "given_name", "surname", "issuing_region")},
                birth_date=datetime.date.fromisoformat(_string(answer, "birth_date")),
                expires=datetime.date.fromisoformat(_string(answer, "expires")))
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryUnavailable(f"the registry's lookup answer is outside the contract: {exc}") from None
        if (record.id_type, record.id_number) != (id_type, id_number):
            raise RegistryUnavailable("the registry answered the lookup with another document")
        return record

    def compare_face(self, id_type: str, id_number: str, photo: bytes, media_type: str) -> float:
        """How alike ``photo`` and the registry's photo of the document's holder are, 0..1.

        ``media_type`` is image/jpeg (image/jpg), image/png or image/tiff, and must be what the
        photo's content is (:func:`photo_media_type` tells it from the bytes).

        Raises: ValueError: id_type or id_number is empty. PhotoRefused: another media type, a
        content that is not the media type, an empty photo or one above 10 MiB (checked before
        sending: :func:`checked_photo_type`), or the registry's 422. IdentityNotFound: the
        registry holds no such document. RegistryRejected: the registry refused the RA.
        RegistryUnavailable: no useful answer after the attempts, or an answer outside the
        contract.
        """
        _require_text(id_type=id_type, id_number=id_number)
        declared = checked_photo_type(photo, media_type)
        body = {"id_type": id_type, "id_number": id_number, "media_type": declared,
                "photo": base64.b64encode(photo).decode("ascii")}
        response = self._post(COMPARE_PATH, body, what=f"the face comparison for {id_type} {mask_id_number(id_number)}")
        score = _json_object(response).get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) \
                or not 0.0 <= score <= 1.0:
            raise RegistryUnavailable("the registry's face comparison answer is outside the contract: no score in 0..1")
        return float(score)

    # --- one call: attempts, pauses, and the answers that are errors -------------------------

    def _post(self, path: str, body: dict[str, Any], *, what: str) -> httpx.Response:
        """The registry's 2xx answer to ``body`` at ``path``.

        Raises: IdentityNotFound, PhotoRefused, RegistryRejected, RegistryUnavailable (see the
        public calls).
        """
        headers = {"X-Request-Id": uuid.uuid4().hex}  # the same on every attempt: one logical call
        pause = self._backoff
        reason = ""
        for attempt in range(1, self.attempts + 1):
            retry_after: float | None = None
            try:
                response = self._http.post(path, json=body, headers=headers)
            except httpx.TimeoutException:
                reason = "no answer in time"
            except httpx.TransportError as exc:
                reason = f"no connection ({type(exc).__name__})"
            else:
                if response.status_code not in RETRIED_STATUSES:
                    return _answer(response, what)
                reason = f"HTTP {response.status_code}"
                retry_after = _retry_after_seconds(response.headers.get("retry-after", ""))
            if attempt == self.attempts:
                break
            wait = min(MAX_BACKOFF_SECONDS, max(pause * random.uniform(0.5, 1.0), retry_after or 0.0))
            log.warning("identity registry: %s got %s (attempt %d of %d); trying again in %.2f s",
                        what, reason, attempt, self.attempts, wait)
            self._sleep(wait)
            pause = min(MAX_BACKOFF_SECONDS, pause * 2)
        log.warning("identity registry: %s got %s after %d attempts; giving up for now", what, reason, self.attempts)
        raise RegistryUnavailable(f"the identity registry did not answer {what} ({reason}, {self.attempts} attempts)")


def _answer(response: httpx.Response, what: str) -> httpx.Response:
    """``response`` when it is a 2xx.

    Raises: IdentityNotFound: a 404 saying not_found. PhotoRefused: a 422 or 413. RegistryRejected:
    a 401, 403, 400 or another status outside the contract.
    """
    status = response.status_code
    if 200 <= status < 300:
        return response
    error, detail = _error_body(response)
    if status == 404 and error == "not_found":
        raise IdentityNotFound(f"the registry holds no such identity document ({what})")
    if status == 422 or status == 413:
        raise PhotoRefused(f"the registry refused the photo: {detail or error or f'HTTP {status}'}")
    if status in (401, 403):
        log.error("identity registry: %s refused with HTTP %d: check the RA's API key or client certificate",
                  what, status)
        raise RegistryRejected(f"the identity registry refused the RA's credentials (HTTP {status})")
    log.error("identity registry: %s answered HTTP %d %s", what, status, error)
    raise RegistryRejected(f"the identity registry refused {what}: HTTP {status} {error} {detail}".rstrip())


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """The (error, detail) of a contract error body; ("", "") when it is none."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, detail = body.get("error", ""), body.get("detail", "")
    return (error[:64] if isinstance(error, str) else "", detail[:200] if isinstance(detail, str) else "")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """Raises: RegistryUnavailable: the answer is not a JSON object."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RegistryUnavailable("the identity registry's answer is not a JSON object")
    return body


def _string(answer: dict[str, Any], name: str) -> str:
    value = answer[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def _require_text(**arguments: str) -> None:
    for name, value in arguments.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")


def _retry_after_seconds(value: str) -> float | None:
    """A Retry-After header's delay in seconds; None when absent or an HTTP date (a date would
    need the wall clock, and the backoff is bounded anyway)."""
    value = value.strip()
    return float(value) if value.isdigit() else None

