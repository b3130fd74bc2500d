"""The client's exceptions: one base class with the server's status, reason and help code, and a
subclass for each case an application handles differently.

The server sends a stable reason and its metadata as ``google.rpc.ErrorInfo`` in the status
details (grpcio-status); from a server that does not, the status code, the ``help-code`` trailer
and the documented message stand in for them.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

HELP_CODE_TRAILER = "help-code"
# gRPC's words for a call that found no connection to make, and for a server certificate that
# did not verify (OpenSSL's, and gRPC's own host name check).
_NOT_CONNECTED = "failed to connect to all addresses"
_NOT_TRUSTED = re.compile(r"CERTIFICATE_VERIFY_FAILED|Hostname Verification")
# gRPC's words for a message over the limit of the side that refused it (the server takes 4 MB).
_TOO_LARGE = re.compile(r"message larger than max")
# gRPC's status for a call that reached a server as it stopped and that no handler had taken up:
# the server's core cancels it (grpc/grpc#41785), though nothing of it ran. The client's own
# cancellations read otherwise ("Locally cancelled by application!", "Channel closed!").
_STOPPED_BEFORE_START = "CANCELLED"
# The documented message of a locked account: "the account is locked until <RFC 3339> after ...".
_LOCKED_MESSAGE = re.compile(r"locked until (\S+?)(?: after|$)")


@dataclass(frozen=True)
class FieldViolation:
    """A request field the server refused, and why."""

    field: str
    description: str


class SignServerClientError(Exception):
    """A call the server refused or that did not complete.

    ``code`` is the gRPC status code's name (e.g. "UNAUTHENTICATED"), ``message`` the server's
    sentence for people, ``reason`` its stable reason (e.g. "ACCOUNT_LOCKED", None from a server
    that sends none), ``help_code`` the documents' help code when one applies, ``metadata`` the rest
    of the reason's metadata.
    """

    def __init__(self, code: str, message: str, *, reason: str | None = None, help_code: str | None = None,
                 metadata: dict[str, str] | None = None, retry_after: float | None = None,
                 field_violations: tuple[FieldViolation, ...] = ()):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.help_code = help_code
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.field_violations = field_violations


class AuthenticationRefused(SignServerClientError):
    """UNAUTHENTICATED: the holder's factors (never saying which was wrong), or the application's
    own API key or certificate, were refused."""


class AccountLocked(SignServerClientError):
    """The account refuses every attempt until ``locked_until`` (None when the server did not say)."""

    @property
    def locked_until(self) -> datetime.datetime | None:
        return _moment(self.metadata.get("locked_until"))


class PermissionRefused(SignServerClientError):
    """PERMISSION_DENIED: the application may not do this (an account it may not serve, a flow
    its policy forbids)."""


class AccountDisabled(PermissionRefused):
    """An operator disabled the account (FAILED_PRECONDITION, reason "ACCOUNT_DISABLED"): said only
    to a caller who gave the holder's right factors. The holder may not act until it is enabled."""


class ActivationRefused(PermissionRefused):
    """The activation token does not authorise this: reused, expired, for another credential or
    digest, or beyond its count. Authorise again."""


class NotFound(SignServerClientError):
    """NOT_FOUND: no such credential, or no prepared document of that id (completed, expired, or
    removed by the service)."""


class ServerBusy(SignServerClientError):
    """RESOURCE_EXHAUSTED or UNAVAILABLE from a server that was reached (busy, stopping, or the
    connection lost on the way), or CANCELLED by a server that stopped before it started the call:
    try again later, after ``retry_after`` seconds when the server said. A server that could not be
    reached at all is ServerUnreachable instead."""


class ServerUnreachable(SignServerClientError):
    """UNAVAILABLE before any answer: no connection to the server could be made (nothing listens
    at the address, the name does not resolve, the network is down, or the TLS handshake failed).
    The call never reached the server: nothing was done, no OTP or activation token spent. Check
    the address, or try again once the server is back."""


class ServerNotTrusted(ServerUnreachable):
    """The server's TLS certificate did not verify: not issued by the ``root_certificates`` given,
    expired, or not for the name called (see ``server_name``). Nothing was sent. Trying again does
    not help: fix the client's trust or the address."""


class DeadlineExceeded(SignServerClientError):
    """DEADLINE_EXCEEDED: the call did not end within the client's timeout. A call whose turn had
    not come on the server is not started there; one already under way may have ended (an
    Authorize may have spent the OTP, a SignHash its digests): authorise again rather than retry."""


class CredentialUnusable(SignServerClientError):
    """FAILED_PRECONDITION (reason "CREDENTIAL_UNUSABLE"): the holder's factors are right, but the
    credential may not sign now (its certificate is revoked or expired, or it has none)."""


class InvalidArgument(SignServerClientError):
    """INVALID_ARGUMENT: the request (or the document) is refused as it stands; ``field_violations``
    names the fields when the server does, and ``rule`` the password rule a new password broke."""

    @property
    def rule(self) -> str | None:
        """For a refused new password: "too_short" (under 8 characters), "too_long", "no_letter",
        "no_non_letter", "contains_account", "common" (among the most common passwords),
        "unchanged" (the current password again) or "confirmation_differs"; else None."""
        return self.metadata.get("rule")


class AlreadyExists(SignServerClientError):
    """ALREADY_EXISTS: the thing to create exists (an account name taken, a CA already set up)."""


class CertificateRefused(SignServerClientError):
    """The CA refused a certificate operation for a rule of the documents; ``help_code`` names the
    documents' help code when one applies (e.g. "AC-AB-0015": revoke the valid certificate first)."""


class AlreadyRenewed(CertificateRefused):
    """The certificate was renewed already (reason "ALREADY_RENEWED"): it has a successor that is
    not revoked, perhaps issued for a request that ran at the same time. Nothing was changed; the
    successor is the certificate whose ``predecessor_serial`` is this one."""


class RequestReplayed(SignServerClientError):
    """The core refused an RA request as a replay: its nonce was used before (reason
    "RA_REQUEST_REPLAYED") or its time is outside the core's window ("RA_REQUEST_OUT_OF_WINDOW":
    an old request, or the RA's clock is off). Nothing was changed."""


_BY_CODE: dict[grpc.StatusCode, type[SignServerClientError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationRefused,
    grpc.StatusCode.PERMISSION_DENIED: PermissionRefused,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusy,
    grpc.StatusCode.UNAVAILABLE: ServerBusy,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}
_BY_REASON: dict[str, type[SignServerClientError]] = {
    "ACCOUNT_LOCKED": AccountLocked,
    "ACCOUNT_DISABLED": AccountDisabled,
    "CREDENTIAL_UNUSABLE": CredentialUnusable,
    "ACTIVATION_REFUSED": ActivationRefused,
    "CERTIFICATE_REFUSED": CertificateRefused,
    "ALREADY_RENEWED": AlreadyRenewed,
    "RA_REQUEST_REPLAYED": RequestReplayed,
    "RA_REQUEST_OUT_OF_WINDOW": RequestReplayed,
}
# Methods whose only PERMISSION_DENIED is a refused activation token (the proto's documentation):
# what a server without reasons means by it.
_ACTIVATION_METHODS = frozenset({"SignHash", "CompleteSignature"})


def from_rpc_error(error: grpc.RpcError, method: str = "", *, address: str | None = None,
                   server_name: str | None = None) -> SignServerClientError:
    """The client exception for a failed call of ``method`` (its short name, e.g. "SignHash") to
    the server at ``address`` (named ``server_name`` in its certificate, when given)."""
    if not isinstance(error, grpc.Call):  # raised before any call existed (e.g. a closed channel)
        return SignServerClientError("UNKNOWN", str(error))
    code = error.code() or grpc.StatusCode.UNKNOWN
    message = error.details() or ""
    reason, metadata, retry_after, violations = _details(error)
    if reason is None:  # gRPC's own refusals, not the server's: no ErrorInfo
        transport = _transport_error(code, message, address, server_name)
        if transport is not None:
            return transport
    help_code = metadata.pop("help_code", None) or _trailer(error, HELP_CODE_TRAILER)
    cls = _BY_REASON.get(reason or "") or _fallback_class(code, message, method)
    if cls is AccountLocked and "locked_until" not in metadata:
        found = _LOCKED_MESSAGE.search(message)
        if found and _moment(found.group(1)):
            metadata["locked_until"] = found.group(1)
    return cls(code.name, message, reason=reason, help_code=help_code, metadata=metadata,
               retry_after=retry_after, field_violations=violations)


def _transport_error(code: grpc.StatusCode, message: str, address: str | None,
                     server_name: str | None) -> SignServerClientError | None:
    """What gRPC itself refused: no connection, a server certificate that does not verify, a
    call a stopping server never started, a message over the limit. None for anything else."""
    where = f"the server at {address}" if address else "the server"
    if code is grpc.StatusCode.UNAVAILABLE and _NOT_CONNECTED in message:
        if _NOT_TRUSTED.search(message):
            name = f" (checked for the name {server_name})" if server_name else ""
            return ServerNotTrusted(code.name, f"{where} presented a TLS certificate that does not verify{name}: "
                                    "not issued by the root_certificates given, expired, or for another name; "
                                    f"nothing was sent ({message})")
        return ServerUnreachable(code.name, f"cannot connect to {where}; nothing was sent ({message})")
    if code is grpc.StatusCode.CANCELLED and message == _STOPPED_BEFORE_START:
        return ServerBusy(code.name, f"{where} ended the call as it stopped (CANCELLED, with no reason given): "
                          "try again")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE.search(message):
        return InvalidArgument(code.name, f"a message of the call is larger than {where} takes in one message "
                               "(4 MB: a document's header, seal image included, must fit in it); nothing was "
                               f"done ({message})")
    return None


def _fallback_class(code: grpc.StatusCode, message: str, method: str) -> type[SignServerClientError]:
    if code is grpc.StatusCode.FAILED_PRECONDITION and _LOCKED_MESSAGE.search(message):
        return AccountLocked
    if code is grpc.StatusCode.PERMISSION_DENIED and method in _ACTIVATION_METHODS:
        return ActivationRefused
    return _BY_CODE.get(code, SignServerClientError)


def _details(call: grpc.Call) -> tuple[str | None, dict[str, str], float | None, tuple[FieldViolation, ...]]:
    """The ErrorInfo reason and metadata, the RetryInfo delay and the BadRequest violations of a
    call's status details; empty when the server sent none or they cannot be read."""
    try:
        status = rpc_status.from_call(call)
    except (ValueError, DecodeError):  # details that contradict the status, or garbled: ignored
        status = None
    reason, metadata, retry_after, violations = None, {}, None, []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason or None, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return reason, metadata, retry_after, tuple(violations)


def _trailer(call: grpc.Call, key: str) -> str | None:
    for name, value in call.trailing_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _moment(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
