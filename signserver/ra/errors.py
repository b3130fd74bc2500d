"""The registration authority's errors: one hierarchy rooted at RaError.

The RA is a separate process; it never raises the core's errors. Adapters
(the HTTP API, the CLI) map these classes to responses in one place each.
"""
from __future__ import annotations


class RaError(Exception):
    """Root of every error the RA raises on purpose."""


class SettingsError(RaError):
    """The [ra] configuration section is missing a value or holds a bad one."""


class RenewalNotFound(RaError):
    """No renewal with the given id or serial."""


class Refusal(RaError):
    """A request refused for what it asks (by the RA's rules or by the core); ``help_code`` is
    set when the documents give the situation a help code (AC-AB-0007, AC-AB-0014, AC-AB-0015).
    ``reason`` is a stable word for what was refused, for a page to say it in the holder's
    language without reading the message. The RA's own (lower case): "photo_mismatch",
    "identity_mismatch" (renew in person), "limit_reached" (a step tried too many times),
    "not_verified" (e-mail addresses), "revocation_phrase", the password rules "too_short",
    "no_letter", "no_non_letter" and "confirmation_differs" (and the core's "too_long",
    "contains_account", "common", "unchanged", for a new password it refused), "password_missing",
    "no_cloud_credential", "authentication" (a password or OTP not right), "locked"; of the
    operators' requests: "not_a_holders_certificate", "certificate_revoked", "holder_not_registered",
    "confirmed_already", "no_notice", "renewal_over", "not_in_person", "csr_missing",
    "csr_not_wanted", "csr_required", "csr_unreadable" (a file that cannot be read, or is not a
    PKCS#10 request), "qualified_only", "negative_limit", "recovery_code_missing",
    "revocation_phrase_missing", "bad_status", "search_empty", "page_token_not_valid" (a page of a
    listing asked for with a token the core did not give for its filters), "email_not_given_up" (no
    e-mail given up of that number), "email_dismissed_already" (marked dealt with already),
    "enrolment_pending" (an enrolment the RA did not finish: the account exists in the core);
    "out_of_order" for a step the renewal is not at (a form sent twice, an old page's); the core's
    reason (upper case, e.g. "PERMISSION_DENIED") for the core's refusal; "" when none applies.
    A renewal keeps its last refusal's reason (Renewal.refusal_reason), with these words besides:
    "identity_changed" (AC-AB-0014), and for an activation that stopped "interrupted", "failed",
    "registry_unavailable", "core_unavailable" and "subject_changed" (AC-AB-0015)."""

    def __init__(self, message: str, *, help_code: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.help_code = help_code
        self.reason = reason


class StepRefused(Refusal):
    """A renewal step was asked out of order or with bad input, or the core refused it."""


class ConcurrentUpdate(RaError):
    """The renewal changed under us (optimistic concurrency): reload and retry."""


class CodeRefused(RaError):
    """An e-mail verification code is wrong, expired or has used up its attempts; ``reason`` says
    which: "too_soon" (a code went out less than a minute ago), "blocked" (the address, or the
    renewal's sign-in codes, used up), "none" (no code sent yet), "expired", "used_up" (the code's
    attempts) or "wrong"."""

    def __init__(self, message: str, reason: str = "wrong") -> None:
        super().__init__(message)
        self.reason = reason


# --- the identity registry (signserver/ra/registry.py, docs/registry-contract.md) ---------------


class RegistryUnavailable(RaError):
    """The identity registry did not answer usefully: a timeout, a refused connection, a 5xx or
    429 after the configured attempts, or an answer outside the contract. Nothing is lost: the
    renewal waits in its state and asks again later."""


class RegistryRejected(RegistryUnavailable):
    """The registry refused the RA itself (401/403: the API key or client certificate; 400: a
    request it calls malformed). Not retried: an operator has to act. A RegistryUnavailable, so a
    renewal waits rather than fails, and the holder's lookup or comparison is not counted: the
    fault is the RA's, not the holder's."""


class IdentityNotFound(RaError):
    """The registry holds no identity document of that type and number (its 404)."""


class PhotoRefused(RaError):
    """The photo cannot be compared: a media type other than JPEG, PNG or TIFF, content that is
    not what its media type says, an empty or oversized file, or the registry's 422."""


class StoreUnavailable(RaError):
    """The RA's database cannot be reached or refused the operation."""


class CoreUnavailable(RaError):
    """The core did not answer or refused the RA (its client certificate, its settings)."""


class NotYetImplemented(RaError):
    """A step the documents describe that this RA does not offer yet."""


class OperationRefused(Refusal):
    """An operator's command (enrol, unlock, revoke, ...) was refused: by the core (the message
    says why; ``help_code`` names the documents' help code when one applies, e.g. AC-AB-0015), or
    for input the RA checks first (a CSR for a profile whose key is in the core, a password typed
    twice differently, a secret that could not be read)."""


class ApplicationRefused(Refusal):
    """The signed application document is refused: not the document the RA generated, a signature
    that is not intact, valid and whole, a signer not under a configured trust root or not the
    holder, or the holder's password or one-time password not right (never saying which)."""


class HolderNotAuthorised(RaError):
    """A holder's call without the renewal's holder token, with a wrong one, or once it no longer
    holds (expired, or the renewal is over). One answer for every case, a missing renewal
    included: the caller learns nothing about which renewals exist."""


# --- the core's answers (signserver.client errors), translated here only -----------------------

# The gRPC status codes of a core that did not answer, or answered "not now": the request may be
# sent again later; every other code is a refusal of the request itself.
CORE_UNAVAILABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"})


def core_unavailable(exc: Exception) -> bool:
    """Whether a failed call to the core (a ``signserver.client`` error) means the core did not
    answer, or answered "not now", rather than refused the request."""
    return (getattr(exc, "code", "") or "") in CORE_UNAVAILABLE_CODES


def core_error(exc: Exception, refused: type[Refusal] = StepRefused, message: str = "") -> RaError:
    """The RA's error for a failed call to the core (a ``signserver.client`` error, read by its
    attributes: this module imports nothing of the client): CoreUnavailable when the core did not
    answer or was busy, else ``refused`` with ``message`` (default: the core's own sentence), the
    core's help code and its stable reason; for a new password the core refused, the rule it broke
    ("too_short", "common", "contains_account", ...: the client's InvalidArgument.rule) is the
    reason, as the RA's own password rules are. The caller raises it ``from None``: the client
    error's text may quote the request, never a secret, but the RA's answer is its own."""
    if core_unavailable(exc):
        return CoreUnavailable(f"the core does not answer ({exc.code}); try again later")
    text = message or f"the core refused: {getattr(exc, 'message', '') or exc}"
    reason = getattr(exc, "rule", None) or getattr(exc, "reason", "") or ""
    return refused(text, help_code=getattr(exc, "help_code", "") or "", reason=reason)


# --- the operators' accounts (signserver/ra/operator_accounts.py) ------------------------------


class OperatorAccountRefused(Refusal):
    """An operator account cannot be added or changed: a name taken, unknown, malformed or not
    among ra.operators, a password that breaks the rules, a disabled account."""


class OperatorAuthenticationFailed(RaError):
    """An operator's sign-in refused: one answer for an unknown name, a wrong password and a
    wrong or already used one-time password, never saying which."""


class OperatorDisabled(OperatorAuthenticationFailed):
    """The factors were right, but the operator account is disabled."""


class OperatorLocked(RaError):
    """Too many failed sign-ins: the operator account is locked until ``locked_until``."""

    def __init__(self, message: str, locked_until) -> None:
        super().__init__(message)
        self.locked_until = locked_until


# --- the notice link's sign-in (signserver/ra/holder_sign_in.py) -------------------------------


class SignInCodeRefused(CodeRefused):
    """A sign-in code refused; ``reason`` as CodeRefused's ("blocked": the renewal's sign-in codes
    are used up)."""
