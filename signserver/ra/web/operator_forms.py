"""What the operators' pages share: the signed-in operator, how a refusal reads on a form (its
sentence and status), a help code's guidance in the operator's language, an uploaded file, and a
holder's registered identity data read from a form."""

from __future__ import annotations

import datetime
import re
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from signserver.ra.errors import CoreUnavailable, Refusal, RenewalNotFound, StepRefused, StoreUnavailable
from signserver.ra.renewal import Holder, check_new_password
from signserver.ra.web.account_pages import PASSWORD_RULES, password_rule_text
from signserver.ra.web.forms import BadForm
from signserver.ra.web.i18n import N_
from signserver.ra.web.rendering import gettext, guidance
from signserver.ra.web.sessions import session_of

MAX_CSR_BYTES = 64 * 1024
MAX_EMAILS = 8
SUBMISSION_FIELD = "submission"  # a form's single-use id (new_submission)
_SUBMISSION = re.compile(r"[A-Za-z0-9_-]{22}")
# A holder's registered identity data (what the registry's data are compared with in a renewal).
IDENTITY_FIELDS = ("id_type", "id_number", "name", "birth_date", "emails")

# The RA's refusals of an operator's request, by their stable reason (errors.Refusal.reason).
RA_REFUSALS = {
    "not_a_holders_certificate": N_("This certificate is not a holder's: it is not renewed here."),
    "certificate_revoked": N_("This certificate is revoked: it cannot be renewed."),
    "holder_not_registered": N_("The holder of this certificate is not registered with the registration "
                                "authority: record the holder's identity data first (the holder's page)."),
    "confirmed_already": N_("The renewal of this certificate was confirmed already."),
    "no_notice": N_("No notice of this renewal was sent yet, or the renewal is over: there is no notice to send "
                    "again."),
    "renewal_over": N_("This renewal is over: its limits cannot be reopened."),
    "out_of_order": N_("This renewal is not at that step (it has moved on, or it was done already): look at "
                       "the dashboard."),
    "not_in_person": N_("This renewal does not await in-person processing."),
    "csr_missing": N_("Choose the certificate request (CSR) file made on the holder's card."),
    "csr_not_wanted": N_("This profile's key is made in the certificate service: give no CSR file."),
    "csr_required": N_("This profile's key is on the holder's card: choose the certificate request (CSR) file "
                       "made on it."),
    "qualified_only": N_("A transaction limit and an agent qualification belong to qualified certificates."),
    "negative_limit": N_("A transaction limit is a whole number of patacas, 0 for none."),
    "recovery_code_missing": N_("Give the holder's recovery code."),
    "revocation_phrase_missing": N_("Give the holder's revocation phrase."),
    "revocation_phrase": N_("The revocation phrase has 8 to 64 characters, letters and digits only."),
    "bad_status": N_("Choose a status: valid, expired or revoked."),
    "search_empty": N_("Search for part of an account, a name or an e-mail address."),
    "page_token_not_valid": N_("This page of the listing cannot be shown: its link was changed, or made for other "
                               "filters. List the certificates again from the first page."),
    "core_unavailable": N_("The certificate service does not answer; try again later."),
    "email_not_given_up": N_("There is no e-mail given up with this number: it was sent, it has left the outbox, "
                             "or it is still being tried."),
    "email_dismissed_already": N_("This e-mail was marked as dealt with already."),
}
# The core's refusals, by its stable reason (signserver/errors.py); a page may say more of its own.
CORE_REFUSALS = {
    "NOT_FOUND": N_("The certificate service has no such account or certificate."),
    "INVALID_ARGUMENT": N_("The certificate service refused a value given as not valid for this request."),
    "STORE_VALUE_REFUSED": N_("The certificate service refused a value given as not valid for this request."),
    "UNSUPPORTED_ALGORITHM": N_("The certificate service does not accept this key algorithm."),
    "ALREADY_EXISTS": N_("The certificate service has this already."),
    "CERTIFICATE_REFUSED": N_("The certificate service refused this under the certificate rules."),
    "ALREADY_RENEWED": N_("The certificate was renewed already: its successor is among the holder's "
                          "certificates."),
    "CREDENTIAL_UNUSABLE": N_("The certificate is revoked or expired."),
    "PERMISSION_DENIED": N_("The certificate service does not allow this request."),
    "AUTHENTICATION_FAILED": N_("The certificate service refused what the holder gave."),
    "ACCOUNT_LOCKED": N_("The holder's account is locked after too many failed attempts."),
    "ACCOUNT_DISABLED": N_("The holder's account is disabled."),
    "RA_REQUEST_REPLAYED": N_("The certificate service took the request for a repeat of an earlier one; nothing "
                              "was changed. Send it again."),
    "RA_REQUEST_OUT_OF_WINDOW": N_("The certificate service refused the request as too old or too early: the "
                                   "registration authority's clock may be off. Nothing was changed."),
}
CORE_REFUSED = N_("The certificate service refused the request.")


def operator_of(request: Request) -> str:
    """The signed-in operator's name: the one recorded in the audit trail."""
    return session_of(request).subject


def refusal_text(request: Request, exc: Exception, sentences: dict[str, str] | None = None) -> str:
    """The sentence for a refusal in the operator's language, chosen by the refusal's stable
    reason: ``sentences`` (the page's own, by reason), else the RA's (RA_REFUSALS, the password
    rules) and the core's (CORE_REFUSALS; any other of the core's reasons, upper case, is said
    as a refusal of the certificate service), known everywhere; a refusal without a reason keeps
    the domain's own (English) sentence after a translated lead. A help code's guidance in the
    operator's language follows when it has one."""
    code = getattr(exc, "help_code", "") or ""
    reason = getattr(exc, "reason", "") or ""
    if isinstance(exc, CoreUnavailable):
        text = gettext(request, "The certificate service does not answer; try again later.")
    elif isinstance(exc, StoreUnavailable):
        text = gettext(request, "The registration authority's database does not answer; try again later.")
    elif isinstance(exc, RenewalNotFound):
        text = gettext(request, "There is no such renewal.")
    elif sentences and reason in sentences:
        text = sentences[reason]
    elif reason in RA_REFUSALS:
        text = gettext(request, RA_REFUSALS[reason])
    elif reason in PASSWORD_RULES:
        text = password_rule_text(request, reason)[1]
    elif reason and reason.isupper():
        text = gettext(request, CORE_REFUSALS.get(reason, CORE_REFUSED))
    else:
        text = gettext(request, "Refused: %(reason)s", reason=str(exc))
    if code:
        text = f"{text} {help_text(request)(code)} ({code})"
    return text


def new_submission() -> str:
    """A single-use id for a form whose action must not be done twice (an enrolment issues a
    certificate each time): the form carries it in SUBMISSION_FIELD, and spend_submission lets
    it through once."""
    return secrets.token_urlsafe(16)


async def spend_submission(request: Request, form) -> bool:
    """Whether the form's single-use id is one not sent before; it is then spent, in the database,
    so that a reload of the page the form gave, a second click, or two posts racing get False.
    False too for a form without one.

    Raises: StoreUnavailable.
    """
    value = form.get(SUBMISSION_FIELD)
    if not isinstance(value, str) or not _SUBMISSION.fullmatch(value):
        return False
    ctx = request.app.state.web_context
    expires = ctx.sessions.now() + ctx.settings.web_session_max_seconds  # no form outlives its session
    return await run_in_threadpool(ctx.sessions.spend_once, f"form:{value}", expires)


def refusal_status(exc: Exception) -> int:
    """The status of the page that shows the refusal ``exc`` on its form."""
    if isinstance(exc, (CoreUnavailable, StoreUnavailable)):
        return 503
    if isinstance(exc, RenewalNotFound):
        return 404
    return 409 if isinstance(exc, Refusal) else 400


def new_password_errors(request: Request, password: str, confirmation: str) -> dict[str, str]:
    """The errors, by field ("new_password", "confirmation"), of a holder's new password typed
    twice: the documents' rules (renewal.check_new_password), in the operator's language."""
    try:
        check_new_password(password, confirmation)
    except StepRefused as exc:
        if not password:
            return {"new_password": gettext(request, "This field is required.")}
        field, message = password_rule_text(request, exc.reason)
        return {field: message}
    return {}


def help_text(request: Request):
    """A function giving a help code's guidance in the request's language (rendering.guidance,
    without the code: the pages show it beside)."""
    return lambda code: guidance(request, code)


async def read_upload(form, name: str) -> bytes:
    """The bytes of an uploaded file field (b"" when none was chosen).

    Raises: BadForm (reason "too_large"): the file is larger than MAX_CSR_BYTES."""
    value = form.get(name)
    if not isinstance(value, UploadFile):
        return b""
    data = await value.read(MAX_CSR_BYTES + 1)
    if len(data) > MAX_CSR_BYTES:
        raise BadForm("the file is too large", field=name, reason="too_large", limit=MAX_CSR_BYTES)
    return data


def holder_from_form(request: Request, given: dict) -> tuple[Holder | None, dict[str, str]]:
    """The Holder of the form's values (account, identity document, name, birth date, e-mail
    addresses), else None and the errors by field name."""
    errors: dict[str, str] = {}
    for name in ("account", *IDENTITY_FIELDS):
        if not given[name]:
            errors[name] = gettext(request, "This field is required.")
    birth_date = None
    if given["birth_date"]:
        try:
            birth_date = datetime.date.fromisoformat(given["birth_date"])
        except ValueError:
            errors["birth_date"] = gettext(request, "A date is written YYYY-MM-DD.")
    emails = tuple(dict.fromkeys(e.strip() for e in given["emails"].replace(",", " ").split() if e.strip()))
    if given["emails"] and (len(emails) > MAX_EMAILS or not all(_looks_like_email(e) for e in emails)):
        errors["emails"] = gettext(request, "Give up to %(most)s e-mail addresses, separated by spaces or commas.",
                                   most=MAX_EMAILS)
    if errors:
        return None, errors
    return Holder(given["account"], given["id_type"], given["id_number"], given["name"], birth_date, emails), {}


def _looks_like_email(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and len(address) <= 320)
