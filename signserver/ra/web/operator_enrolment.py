"""The operators' enrolment page: a holder's account in the core and the first certificate, as
`signserver ra enrol` makes them, through RaOperations with the signed-in operator's name.

The holder's secrets (password, revocation phrase) travel in the POST body only; the holder's OTP
key (as a QR code and as text) and recovery code are shown once, on a page that is never cached
(the framework marks every page no-store). A refusal is shown on the form, in the operator's
language, with the domain's own sentence."""

from __future__ import annotations

import base64
import io
from urllib.parse import parse_qs, urlparse

import qrcode
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from signserver.ra.errors import CoreUnavailable, OperationRefused, Refusal, StoreUnavailable
from signserver.ra.operations import Enrolment, EnrolmentSecrets, check_enrolment
from signserver.ra.renewal import REVOCATION_PHRASE
from signserver.ra.web.context import WebContext
from signserver.ra.web.forms import BadForm, FieldReader
from signserver.ra.web.operator_forms import (MAX_CSR_BYTES, help_text, holder_from_form, new_password_errors,
                                              new_submission, operator_of, read_upload, refusal_status,
                                              refusal_text, spend_submission)
from signserver.ra.web.rendering import field_errors, gettext, page_route, read_form, render
from signserver.ra.web.sessions import OPERATOR

# The holder profiles of the core's CA (signserver/ca/profiles.py; the RA may not import it).
PROFILES = ("cloud-signature-government", "cloud-signature-corporate", "qualified-government", "qualified-corporate",
            "standard-government", "standard-corporate", "encryption-government", "encryption-corporate")
KINDS = ("personal", "government", "corporate")
ENROL_TEXT_FIELDS = ("account", "id_type", "id_number", "name", "birth_date", "emails", "organisation", "department",
                     "title", "given_name", "surname", "key_algorithm", "transaction_limit", "agent_qualification")
MAX_ENROL_FORM_BYTES = MAX_CSR_BYTES + 32 * 1024


async def enrol(request: Request, ctx: WebContext) -> Response:
    """GET: the enrolment form; POST: the holder's account in the core and the certificate; the
    holder's OTP key (as a QR code) and recovery code are shown once. Each form shown carries a
    single-use id: the same form sent again (a reload of the page of secrets, a second click) is
    refused on the form and enrols nobody twice."""
    values = {"form": {"profile": PROFILES[0], "kind": "government", "recovery_code": True}, "errors": {},
              "error": "", "profiles": PROFILES, "kinds": KINDS, "submission": new_submission()}
    if request.method == "GET":
        return render(request, "operator/enrol.html", **values)
    form = await read_form(request, max_bytes=MAX_ENROL_FORM_BYTES, files=True)
    fields = FieldReader(form)
    given = {name: fields.text(name, max_length=512 if name == "emails" else 256) for name in ENROL_TEXT_FIELDS}
    given.update(profile=str(form.get("profile", "")), kind=str(form.get("kind", "")),
                 recovery_code=form.get("recovery_code") == "yes",
                 existing_account=form.get("existing_account") == "yes")
    try:
        csr = await read_upload(form, "csr")
    except BadForm as exc:
        csr, fields.problems["csr"] = b"", exc
    secrets = EnrolmentSecrets(password=fields.secret("password"), confirmation=fields.secret("confirmation"),
                               revocation_phrase=fields.secret("revocation_phrase"))
    phrase_again = fields.secret("revocation_phrase_confirmation")
    values["form"] = {**given, **fields.typed}
    if fields.problems:  # what was typed is shown again, each error on its field (secrets not put back)
        values["errors"] = field_errors(request, fields)
        return render(request, "operator/enrol.html", status=400, **values)
    enrolment, errors = _enrolment(request, given, csr)
    errors = {**_secrets_errors(request, given["existing_account"], secrets, phrase_again), **errors}
    if enrolment is None or errors:
        values["errors"] = errors
        return render(request, "operator/enrol.html", status=400, **values)
    if not await spend_submission(request, form):
        values["error"] = gettext(request, "This form was sent already (or has expired): nothing was done now. Look "
                                           "at the holder's page before you send it again.")
        return render(request, "operator/enrol.html", status=409, **values)
    try:
        enrolled = await run_in_threadpool(ctx.operations.enrol, enrolment, secrets, operator_of(request))
    except (Refusal, CoreUnavailable, StoreUnavailable) as exc:
        values["error"] = refusal_text(request, exc, {**_enrolment_refusals(request), "ALREADY_EXISTS": gettext(
            request, "The account exists already: to give it another certificate, tick the box for an existing "
                     "account and send the form again.")})
        return render(request, "operator/enrol.html", status=refusal_status(exc), **values)
    refusal = ""
    if enrolled.certificate is None:  # the account was made, the certificate refused: said by its reason
        refusal = refusal_text(request, OperationRefused(enrolled.refusal, help_code=enrolled.help_code,
                                                          reason=enrolled.refusal_reason),
                               _enrolment_refusals(request))
    return render(request, "operator/enrolled.html", enrolled=enrolled, refusal=refusal,
                  otp_qr=_qr_data_url(enrolled.otp_uri) if enrolled.otp_uri else "",
                  otp_key=_otp_key(enrolled.otp_uri), help=help_text(request))


def _enrolment(request: Request, given: dict, csr: bytes | None) -> tuple[Enrolment | None, dict[str, str]]:
    """The Enrolment of the form's values, else the errors by field name."""
    holder, errors = holder_from_form(request, given)
    if given["profile"] not in PROFILES:
        errors["profile"] = gettext(request, "Choose a certificate profile.")
    if given["kind"] not in KINDS:
        errors["kind"] = gettext(request, "Choose the kind of holder.")
    elif given["kind"] != "personal" and not given["organisation"] and not given["existing_account"]:
        errors["organisation"] = gettext(request, "A government or corporate holder's account needs its "
                                                  "organisation.")  # the core's rule, said on the field
    limit = 0
    if given["transaction_limit"]:
        try:
            limit = int(given["transaction_limit"])
            if limit < 0 or limit > 10**12:
                raise ValueError
        except ValueError:
            errors["transaction_limit"] = gettext(request, "A transaction limit is a whole number of patacas, "
                                                           "0 for none.")
    if errors:
        return None, errors
    enrolment = Enrolment(
        holder=holder, profile=given["profile"], kind=given["kind"], organisation=given["organisation"],
        department=given["department"], title=given["title"], given_name=given["given_name"],
        surname=given["surname"], key_algorithm=given["key_algorithm"], csr=csr or None, transaction_limit=limit,
        agent_qualification=given["agent_qualification"], recovery_code=given["recovery_code"],
        existing_account=given["existing_account"])
    try:
        check_enrolment(enrolment)
    except OperationRefused as exc:
        field_name = "csr" if exc.reason in ("csr_not_wanted", "csr_required") else "profile"
        return None, {field_name: refusal_text(request, exc)}
    return enrolment, {}


def _enrolment_refusals(request: Request) -> dict[str, str]:
    """The core's refusals of an enrolment said more precisely than refusal_text's own."""
    return {"INVALID_ARGUMENT": gettext(request, "The certificate service refused the enrolment's data: check "
                                                 "that the profile suits the kind of holder, that the CSR names "
                                                 "the holder, and the holder's data."),
            # The core made the account, the RA's database failed: the secrets are shown all the same.
            "store_unavailable": gettext(request, "The registration authority's database did not record the "
                                                  "enrolment: it stays pending, and the holder's secrets below are "
                                                  "shown this once."),
            "enrolment_pending": gettext(request, "This account's enrolment is pending (the registration authority "
                                                  "stopped before it finished): see \"Enrolments not finished\" on "
                                                  "the dashboard for how to finish it, and how to give the holder a "
                                                  "new OTP key and recovery code if they were not shown.")}


def _secrets_errors(request: Request, existing_account: bool, secrets: EnrolmentSecrets,
                    phrase_again: str) -> dict[str, str]:
    """The errors, by field, of what the holder typed: a new account's password (the documents'
    rules, typed twice alike) and the revocation phrase (8 to 64 letters and digits, or none)."""
    errors: dict[str, str] = {}
    if not existing_account:
        errors.update({"password" if name == "new_password" else name: message for name, message in
                       new_password_errors(request, secrets.password, secrets.confirmation).items()})
    if secrets.revocation_phrase and not REVOCATION_PHRASE.fullmatch(secrets.revocation_phrase):
        errors["revocation_phrase"] = gettext(request, "The revocation phrase has 8 to 64 characters, letters and "
                                                       "digits only.")
    elif secrets.revocation_phrase != phrase_again:
        errors["revocation_phrase_confirmation"] = gettext(request, "The revocation phrase and its confirmation "
                                                                    "differ.")
    return errors


def _qr_data_url(text: str) -> str:
    """``text`` as a QR code in a PNG data: URL (the CSP allows img-src data:)."""
    image = qrcode.make(text, box_size=6, border=2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _otp_key(uri: str) -> str:
    """The base32 key of an otpauth:// URI, in groups of four, for typing into an OTP app."""
    key = (parse_qs(urlparse(uri).query).get("secret") or [""])[0] if uri else ""
    return " ".join(key[i:i + 4] for i in range(0, len(key), 4))


def routes() -> list[BaseRoute]:
    return [
        page_route("/operator/enrol", enrol, who=OPERATOR, methods=("GET", "POST"), name="operator_enrol",
                   files=True, max_bytes=MAX_ENROL_FORM_BYTES),
    ]
