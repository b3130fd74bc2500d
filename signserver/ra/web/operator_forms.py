"""What the operators' pages share: the signed-in operator, how a refusal reads on a form (its
sentence and status), a help code's guidance in the operator's language, an uploaded file, and a
holder's registered identity data read from a form."""

from __future__ import annotations

import datetime

from starlette.datastructures import UploadFile
from starlette.requests import Request

from signserver.ra.errors import CoreUnavailable, Refusal, RenewalNotFound, StoreUnavailable
from signserver.ra.renewal import Holder
from signserver.ra.web.forms import BadForm
from signserver.ra.web.rendering import gettext, guidance
from signserver.ra.web.sessions import session_of

MAX_CSR_BYTES = 64 * 1024
MAX_EMAILS = 8
# A holder's registered identity data (what the registry's data are compared with in a renewal).
IDENTITY_FIELDS = ("id_type", "id_number", "name", "birth_date", "emails")


def operator_of(request: Request) -> str:
    """The signed-in operator's name: the one recorded in the audit trail."""
    return session_of(request).subject


def refusal_text(request: Request, exc: Exception) -> str:
    """The sentence for a refusal: the domain's own (English) sentence after a translated lead,
    and a help code's guidance in the operator's language when it has one."""
    code = getattr(exc, "help_code", "") or ""
    if isinstance(exc, CoreUnavailable):
        text = gettext(request, "The certificate service does not answer; try again later.")
    elif isinstance(exc, StoreUnavailable):
        text = gettext(request, "The registration authority's database does not answer; try again later.")
    elif isinstance(exc, RenewalNotFound):
        text = gettext(request, "There is no such renewal.")
    else:
        text = gettext(request, "Refused: %(reason)s", reason=str(exc))
    if code:
        text = f"{text} {help_text(request)(code)} ({code})"
    return text


def refusal_status(exc: Exception) -> int:
    """The status of the page that shows the refusal ``exc`` on its form."""
    if isinstance(exc, (CoreUnavailable, StoreUnavailable)):
        return 503
    if isinstance(exc, RenewalNotFound):
        return 404
    return 409 if isinstance(exc, Refusal) else 400


def help_text(request: Request):
    """A function giving a help code's guidance in the request's language (rendering.guidance,
    without the code: the pages show it beside)."""
    return lambda code: guidance(request, code)


async def read_upload(form, name: str) -> bytes:
    """The bytes of an uploaded file field (b"" when none was chosen).

    Raises: BadForm: the file is larger than MAX_CSR_BYTES."""
    value = form.get(name)
    if not isinstance(value, UploadFile):
        return b""
    data = await value.read(MAX_CSR_BYTES + 1)
    if len(data) > MAX_CSR_BYTES:
        raise BadForm("the file is too large")
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
