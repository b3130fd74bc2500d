"""A certified document's terms: what its certification (DocMDP) signature lets a later signer do.

A certifying signature (ISO 32000-1 12.8.2.2) states in its reference dictionary which changes may
follow it: P=1 none, P=2 filling in forms and signing, P=3 that and annotating. A later change it
does not allow breaks the certification in every validator. Signing the fields the certifier left
empty is what P=2 allows; a new signature field is not form filling, and validators (pyHanko's
difference analysis among them) refuse a new visible one after any certification, P=3 included:
the widget changes the page. So a certified document is signed into an empty field it already
has, or (P=3 only) into a new invisible one, or refused with a message that says why and what to do.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields

from signserver.errors import InvalidArgument


class Permission(enum.IntEnum):
    """The DocMDP permission levels, /P in the transform parameters (ISO 32000-1 Table 254)."""

    NO_CHANGES = 1
    FILL_FORMS = 2
    ANNOTATE = 3


# /P's value when the transform parameters leave it out (ISO 32000-1 Table 254).
_DEFAULT_PERMISSION = Permission.FILL_FORMS


@dataclass(frozen=True)
class Certification:
    """A document's certification: its permission level and the signature fields still empty
    (in the order of the form's field list)."""

    permission: Permission
    empty_fields: tuple[str, ...]


def read_certification(writer: IncrementalPdfFileWriter) -> Certification | None:
    """The certification of the document ``writer`` updates; None when it is not certified.

    Raises: InvalidArgument: the certification states a permission level that does not exist.
    """
    permission = _docmdp_permission(writer.prev.root)
    if permission is None:
        return None
    empty = tuple(name for name, _, _ in fields.enumerate_sig_fields(writer.prev, filled_status=False))
    return Certification(permission, empty)


def _docmdp_permission(root: generic.DictionaryObject) -> Permission | None:
    """/P of the DocMDP transform of the signature /Perms /DocMDP points to; None when there is
    no /Perms /DocMDP (the document is then not certified). A /Perms /DocMDP whose signature
    states no DocMDP transform (damaged or stripped) is taken as certifying with form filling
    allowed, the default, as viewers take it: never as no certification.

    Raises: InvalidArgument: /P is not the integer 1, 2 or 3.
    """
    perms = _dictionary(root, "/Perms")
    if perms is None or perms.get("/DocMDP") is None:
        return None
    signature = _dictionary(perms, "/DocMDP")
    references = signature.get("/Reference") if signature is not None else None
    if not isinstance(references, generic.ArrayObject):
        return Permission(_DEFAULT_PERMISSION)
    for reference in references:
        reference = reference.get_object()
        if not isinstance(reference, generic.DictionaryObject) or reference.get("/TransformMethod") != "/DocMDP":
            continue
        params = _dictionary(reference, "/TransformParams")
        value = params.get("/P", _DEFAULT_PERMISSION) if params is not None else _DEFAULT_PERMISSION
        try:
            if type(value) is bool or not isinstance(value, int):  # a real 2.9 or true is no level
                raise TypeError
            return Permission(int(value))
        except (TypeError, ValueError):
            raise InvalidArgument(f"the document cannot be signed: its certification states an unknown "
                                  f"permission level (DocMDP P={str(value)[:20]})") from None
    return Permission(_DEFAULT_PERMISSION)


def _dictionary(container: generic.DictionaryObject, key: str) -> generic.DictionaryObject | None:
    value = container.get(key)
    value = value.get_object() if value is not None else None
    return value if isinstance(value, generic.DictionaryObject) else None


def keep_certification(writer: IncrementalPdfFileWriter, options):
    """``options`` (a StampOptions) as signing the document must use them for its certification
    to stay valid: into an empty signature field the certifier left (the one named, else the
    first), drawn with our stamp if the field is visible; ``options`` unchanged when the document
    is not certified or a new field is allowed.

    Raises: InvalidArgument: the certification forbids any change (P=1); or it allows no new
        field (P=2, or a visible one under P=3) and the document has no empty signature field
        (by the name asked for).
    """
    certification = read_certification(writer)
    if certification is None:
        return options
    if certification.permission is Permission.NO_CHANGES:
        raise InvalidArgument(
            "the document cannot be signed: it is certified with no changes allowed (DocMDP P=1), and any "
            "signature added to it would invalidate its certification; ask the certifier for a version "
            "certified to allow signing (P=2) with an empty signature field for you")
    empty = certification.empty_fields
    if options.field_name in empty or (not options.field_name and empty):
        # The certifier's field is visible or not whatever the caller asked; if it is, it shows
        # our stamp rather than a generic appearance.
        return dataclasses.replace(options, field_name=options.field_name or empty[0], visible=True)
    if certification.permission is Permission.ANNOTATE and not options.visible:
        return options
    if certification.permission is Permission.FILL_FORMS:
        why = ("its certification allows only filling in forms and signing (DocMDP P=2), and a new "
               "signature field would invalidate it")
    else:
        why = ("its certification allows only filling in forms, signing and annotating (DocMDP P=3), and "
               "a new visible signature field would invalidate it")
    if options.field_name and empty:
        listed = ", ".join(repr(name) for name in empty)
        raise InvalidArgument(f"the document cannot be signed in a field named {options.field_name!r}: {why}; "
                              f"sign one of its empty signature fields ({listed}), or leave the field name "
                              "empty to sign the first")
    invisible = ", or sign invisibly" if certification.permission is Permission.ANNOTATE else ""
    raise InvalidArgument(f"the document cannot be signed: it has no empty signature field and {why}; ask the "
                          f"certifier for a version with an empty signature field for you{invisible}")
