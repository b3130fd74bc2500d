"""The one exception hierarchy of signserver.

Every error the product raises on purpose is a :class:`SignServerError`. Third-party errors
(python-pkcs11, cryptography, ...) are translated into these where they enter, so each adapter
(gRPC, CLI) maps this hierarchy to its own status codes in a single place.

Messages are written for the person who reads them: they say what went wrong and, where it
helps, what to do. They never contain a secret.

Every class has a stable ``reason`` (UPPER_SNAKE): what a program reads, on the wire, instead of
the message (gRPC's ErrorInfo, CSC's error codes). Reasons never change once published; a new
class gets a new one.
"""

import math


class SignServerError(Exception):
    """Base of every error signserver raises on purpose."""

    reason = "INTERNAL"


class ConfigurationError(SignServerError):
    """A configuration value is missing or invalid; the message names the key and the problem."""

    reason = "CONFIGURATION_INVALID"

    def __init__(self, key: str, reason: str):
        super().__init__(f"configuration {key}: {reason}")
        self.key = key
        self.problem = reason  # not ``reason``: that is the class's stable reason


class InvalidArgument(SignServerError):
    """The caller's input is malformed or out of range; ``field`` names the request's field at
    fault when the adapter knows it (the message stays as written)."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnsupportedAlgorithm(InvalidArgument):
    """The algorithm is unknown to signserver or not offered by the token."""

    reason = "UNSUPPORTED_ALGORITHM"


class NotFound(SignServerError):
    """The thing asked for does not exist."""

    reason = "NOT_FOUND"


class KeyNotFound(NotFound):
    """No key with that identifier or label is on the token."""

    reason = "KEY_NOT_FOUND"


class TokenNotFound(NotFound):
    """No token with that label (or no free slot) is present in the PKCS#11 module."""

    reason = "TOKEN_NOT_FOUND"


class AlreadyExists(SignServerError):
    """Creating the thing would duplicate an existing one."""

    reason = "ALREADY_EXISTS"


class HsmError(SignServerError):
    """The HSM refused or failed an operation."""

    reason = "HSM_ERROR"


class HsmUnavailable(HsmError):
    """The PKCS#11 module cannot be loaded or the token does not answer."""

    reason = "HSM_UNAVAILABLE"


class HsmLoginFailed(HsmError):
    """The token refused the PIN. Never retried automatically, so that the token's own PIN
    lockout is not triggered by the server."""

    reason = "HSM_LOGIN_FAILED"


class HsmLoginWithheld(HsmLoginFailed):
    """The server did not try the PIN, so as not to bring the token nearer its PIN lockout: the
    token refused that PIN before (in any process), or reports wrong tries since its last login."""

    reason = "HSM_LOGIN_WITHHELD"


class HsmPinLocked(HsmError):
    """The token's PIN is locked after too many wrong tries; the security officer must unblock it."""

    reason = "HSM_PIN_LOCKED"


class HsmOperationFailed(HsmError):
    """The token failed an operation for a reason that is neither the caller's nor transient."""

    reason = "HSM_OPERATION_FAILED"


class StoreUnavailable(SignServerError):
    """The database cannot be reached or stays busy."""

    reason = "STORE_UNAVAILABLE"


class SpoolUnavailable(StoreUnavailable):
    """The state directory's file system refuses the files a document passes through (it is full,
    over its quota, read-only or not writable by the server): nothing was kept, nothing signed.
    The caller tries again later; the operator's log says what the file system answered."""

    reason = "SPOOL_UNAVAILABLE"


class StoreConflict(AlreadyExists):
    """The database already holds a record the change conflicts with (another change wrote the same
    unique value first)."""

    reason = "STORE_CONFLICT"


class StoreValueRefused(InvalidArgument):
    """The database cannot keep a value (longer than its column, a character or a number it does
    not hold): a check of the input should have refused it first."""

    reason = "STORE_VALUE_REFUSED"


class StoreRefused(SignServerError):
    """The database refused a statement for a reason that is nobody's input: a fault of the server,
    whose log has the details."""

    reason = "STORE_REFUSED"


class DataCorrupted(SignServerError):
    """Stored data failed its integrity check (a sealed secret, an audit record)."""

    reason = "DATA_CORRUPTED"


class Unauthenticated(SignServerError):
    """The calling application did not prove who it is (no or unknown API key or certificate)."""

    reason = "APPLICATION_UNAUTHENTICATED"


class NoCredentials(Unauthenticated):
    """The calling application presented no credentials of a kind the surface takes at all (as
    opposed to credentials that were refused): HTTP answers it with a bare challenge."""


class PermissionDenied(SignServerError):
    """The caller is known but may not do this (another application's account, a role it lacks)."""

    reason = "PERMISSION_DENIED"


class AuthenticationFailed(SignServerError):
    """The account's factors were refused. The message never says which factor was wrong."""

    reason = "AUTHENTICATION_FAILED"

    GENERIC = "authentication failed: the account, password or one-time password is not right"

    def __init__(self, message: str = GENERIC):
        super().__init__(message)


class AccountLocked(SignServerError):
    """Too many failed authentications: the account refuses every attempt until ``until``."""

    reason = "ACCOUNT_LOCKED"

    def __init__(self, until):
        super().__init__(
            f"the account is locked until {until.isoformat(timespec='seconds')} after too many "
            "failed attempts; try again then, or have it unlocked with the recovery code"
        )
        self.until = until


class AccountDisabled(SignServerError):
    """The account was disabled by an operator."""

    reason = "ACCOUNT_DISABLED"


class ActivationRefused(SignServerError):
    """A signature activation token (SAD) does not authorise this request."""

    reason = "ACTIVATION_REFUSED"


class CertificateRefused(SignServerError):
    """The CA refuses a certificate operation for a rule of the documents; ``help_code`` is the
    documents' help code (for example AC-AB-0015) when one applies."""

    reason = "CERTIFICATE_REFUSED"

    def __init__(self, message: str, help_code: str | None = None):
        super().__init__(f"{help_code}: {message}" if help_code else message)
        self.help_code = help_code


class AlreadyRenewed(CertificateRefused):
    """The certificate has a successor that is not revoked: it was renewed already (perhaps by a
    request that ran at the same time). Nothing was changed; the successor is the certificate
    whose predecessor_serial names this one."""

    reason = "ALREADY_RENEWED"


class CredentialUnusable(SignServerError):
    """The credential's certificate is revoked or expired: it can no longer authorise or sign."""

    reason = "CREDENTIAL_UNUSABLE"


class UpstreamUnavailable(SignServerError):
    """A service signserver relies on (an external time-stamping authority, ...) does not answer."""

    reason = "UPSTREAM_UNAVAILABLE"


class AuthenticationBusy(SignServerError):
    """As many authentications of the account are under way as it has failures left before its
    lock; the caller should try again in a moment."""

    reason = "AUTHENTICATION_BUSY"


class ServerBusy(SignServerError):
    """More work is waiting than the server takes on; the caller should try again shortly, or
    after ``retry_seconds`` when the refusal knows how long its work takes (None: the front's own
    delay)."""

    reason = "SERVER_BUSY"

    def __init__(self, message: str, retry_seconds: float | None = None):
        super().__init__(message)
        self.retry_seconds = retry_seconds


class MemoryExhausted(ServerBusy):
    """The request needs more memory than a worker may take (``server.worker_memory_mb``), or the
    worker is too near its bound to take it on now: another try may fit once the calls under way
    end, a smaller document may fit at once."""

    reason = "MEMORY_EXHAUSTED"


class RateLimited(ServerBusy):
    """The caller asked for more costly work (HSM signatures made for anyone who asks) than its
    rate allows; nothing was done, and it may ask again after ``retry_seconds``."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_seconds: float):
        super().__init__(message, retry_seconds)


def retry_after_seconds(error: SignServerError, default: int) -> int:
    """The whole seconds a refused caller should wait: the error's own ``retry_seconds`` where it
    says (ServerBusy), else ``default``, the front's."""
    return math.ceil(getattr(error, "retry_seconds", None) or default)


class ServerStopping(SignServerError):
    """The server is stopping: work not yet started is refused, so that the stop waits only for
    work under way. Nothing was done (nothing signed, no activation token spent): the caller
    tries again, on another worker or node."""

    reason = "SERVER_STOPPING"


class CallerGaveUp(SignServerError):
    """The caller stopped waiting (it cancelled the call) before the work began, so the work was
    never started: nothing was signed, no activation token spent."""

    reason = "CANCELLED"


class DeadlineExceeded(CallerGaveUp):
    """The caller's deadline passed before the work began, so the work was never started."""

    reason = "DEADLINE_EXCEEDED"


class RequestReplayed(SignServerError):
    """A registration authority's request was refused as a replay: its nonce was seen before.
    Nothing was changed; a new request takes a new nonce."""

    reason = "RA_REQUEST_REPLAYED"


class RequestOutOfWindow(RequestReplayed):
    """A registration authority's request was made too long before (or after) the server's clock
    to be checked against the nonces kept: an old request replayed, or a clock that drifted."""

    reason = "RA_REQUEST_OUT_OF_WINDOW"
