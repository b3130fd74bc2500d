"""Reading the pages' forms: bounded in size, parsed once, every text field checked.

page_route reads a POST's body (within the route's limit: FORM_BYTES, or up to UPLOAD_CEILING for
a page that takes files) before the handler runs, to check its CSRF token; read_form then holds it
to the page's own limit."""

from __future__ import annotations

import unicodedata

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from signserver.ra.errors import RaError

FORM_BYTES = 64 * 1024  # a form without files
UPLOAD_CEILING = 32 * 1024 * 1024  # a form with files (a photo, a signed PDF) at the very most
MAX_FIELDS = 200
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"


class BadForm(RaError):
    """A form that cannot be used: not a form, malformed, a field missing, too long, not text.
    ``field`` names the field at fault, ``reason`` says what is wrong with it, for a page to say
    it on the field in the visitor's language: "required", "not_text" (a file, or not valid
    Unicode), "too_long" (more than ``limit`` characters), "control_characters"; "" for the form
    as a whole."""

    def __init__(self, message: str, *, field: str = "", reason: str = "", limit: int = 0) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.limit = limit


class FormTooLarge(BadForm):
    """A request body past the page's limit."""


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read once and kept on the request.

    Raises: FormTooLarge: past ``limit`` bytes (reading stops there).
    """
    if hasattr(request, "_body"):
        if len(request._body) > limit:
            raise FormTooLarge(f"the form is larger than {limit} bytes")
        return request._body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormTooLarge(f"the form is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FormTooLarge(f"the form is larger than {limit} bytes")
        chunks.append(chunk)
    request._body = b"".join(chunks)  # Starlette's own cache: request.form() parses it from here
    return request._body


async def parse_form(request: Request, limit: int) -> FormData:
    """The body parsed as a form (an empty form for another media type).

    Raises: FormTooLarge, BadForm (malformed).
    """
    await read_body(request, limit)
    try:
        # A field may be as long as the whole limit: the page's own limit (read_form) says 413.
        return await request.form(max_fields=MAX_FIELDS, max_files=8, max_part_size=limit)
    except (MultiPartException, HTTPException, ValueError, UnicodeDecodeError):
        raise BadForm("the form cannot be read") from None


async def read_form(request: Request, *, max_bytes: int = FORM_BYTES, files: bool = False) -> FormData:
    """The request's form, within ``max_bytes``; multipart (file uploads) only when ``files``.

    Raises: FormTooLarge (a 413 page), BadForm (a 400 page: not a form, or multipart where no
    file is expected).
    """
    kind = media_type(request)
    if kind == MULTIPART and not files:
        raise BadForm("this form takes no file")
    if kind not in (MULTIPART, URLENCODED):
        raise BadForm("the request is not a form")
    return await parse_form(request, max_bytes)


def clean_text(value: str, *, max_length: int = 256, multiline: bool = False) -> str:
    """``value`` stripped and normalised (NFC).

    Raises: BadForm: longer than ``max_length``, not valid Unicode, or with control characters
    (line breaks allowed when ``multiline``).
    """
    value = unicodedata.normalize("NFC", value.strip())
    if len(value) > max_length:
        raise BadForm(f"longer than {max_length} characters", reason="too_long", limit=max_length)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadForm("not valid Unicode text", reason="not_text") from None
    allowed = "\n\r\t" if multiline else ""
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in value):
        raise BadForm("control characters are not allowed", reason="control_characters")
    return value


def text_field(form: FormData, name: str, *, required: bool = True, max_length: int = 256) -> str:
    """The field ``name`` as clean text ("" when absent and not ``required``).

    Raises: BadForm (``.field`` names the field): missing or empty when ``required``, a file,
    too long, not valid Unicode, or with control characters.
    """
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise BadForm(f"{name} is required", field=name, reason="required")
        return ""
    if isinstance(value, UploadFile) or not isinstance(value, str):
        raise BadForm(f"{name} is a text field", field=name, reason="not_text")
    try:
        cleaned = clean_text(value, max_length=max_length)
    except BadForm as exc:
        raise BadForm(f"{name}: {exc}", field=name, reason=exc.reason, limit=exc.limit) from None
    if required and not cleaned:
        raise BadForm(f"{name} is required", field=name, reason="required")
    return cleaned


def secret_field(form: FormData, name: str, *, required: bool = True, max_length: int = 256) -> str:
    """A password (or revocation phrase) exactly as typed: not stripped, not normalised, since
    spaces and the form of a character may belong to it and the core compares what it is given.

    Raises: BadForm (``.field`` names the field): missing or empty when ``required``, a file,
    too long, not valid Unicode, or with control characters. The message never quotes the value.
    """
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise BadForm(f"{name} is required", field=name, reason="required")
        return ""
    if not isinstance(value, str):
        raise BadForm(f"{name} is a text field", field=name, reason="not_text")
    if len(value) > max_length:
        raise BadForm(f"{name}: longer than {max_length} characters", field=name, reason="too_long",
                      limit=max_length)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadForm(f"{name}: not valid Unicode text", field=name, reason="not_text") from None
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise BadForm(f"{name}: control characters are not allowed", field=name, reason="control_characters")
    return value


class FieldReader:
    """A form's fields read one by one, each field's BadForm kept (``problems``, by field) rather
    than raised: a page shows its form again with each error on its field and what was typed
    (``typed``: a refused text field's value without its control characters; a secret is never
    put back). A refused field reads as ""."""

    def __init__(self, form: FormData) -> None:
        self.form = form
        self.problems: dict[str, BadForm] = {}
        self.typed: dict[str, str] = {}

    def text(self, name: str, *, max_length: int = 256) -> str:
        """The field as text_field reads it (not required)."""
        try:
            return text_field(self.form, name, required=False, max_length=max_length)
        except BadForm as exc:
            self.problems[name] = exc
            value = self.form.get(name)
            self.typed[name] = printable(value) if isinstance(value, str) else ""
            return ""

    def secret(self, name: str, *, max_length: int = 256) -> str:
        """The field as secret_field reads it (not required)."""
        try:
            return secret_field(self.form, name, required=False, max_length=max_length)
        except BadForm as exc:
            self.problems[name] = exc
            return ""


def printable(value: str) -> str:
    """``value`` without control characters and lone surrogates (which no page can be encoded with)."""
    return "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cs")).strip()
