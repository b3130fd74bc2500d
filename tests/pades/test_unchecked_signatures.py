"""What verification says of signatures it cannot check: one of a kind pyHanko does not read
(an old SubFilter such as adbe.x509.rsa_sha1) is not left out of the verdict, and a document whose
signatures a later revision took out of its form is not called a document never signed."""

from __future__ import annotations

import io

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from tests.pades.test_signing import sign


def with_other_signature(data: bytes, subfilter: str, name: str = "Legacy") -> bytes:
    """``data`` and a revision adding a filled signature field of ``subfilter``."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data))
    signature = writer.add_object(generic.DictionaryObject({
        generic.pdf_name("/Type"): generic.pdf_name("/Sig"),
        generic.pdf_name("/Filter"): generic.pdf_name("/Adobe.PPKLite"),
        generic.pdf_name("/SubFilter"): generic.pdf_name(subfilter),
        generic.pdf_name("/ByteRange"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 10, 20, 10)]),
        generic.pdf_name("/Contents"): generic.ByteStringObject(b"\x30\x00"),
    }))
    page_ref = writer.find_page_for_modification(0)[0]
    field = writer.add_object(generic.DictionaryObject({
        generic.pdf_name("/Type"): generic.pdf_name("/Annot"),
        generic.pdf_name("/Subtype"): generic.pdf_name("/Widget"),
        generic.pdf_name("/FT"): generic.pdf_name("/Sig"),
        generic.pdf_name("/T"): generic.TextStringObject(name),
        generic.pdf_name("/Rect"): generic.ArrayObject([generic.NumberObject(0)] * 4),
        generic.pdf_name("/F"): generic.NumberObject(132),
        generic.pdf_name("/P"): page_ref,
        generic.pdf_name("/V"): signature,
    }))
    if "/AcroForm" not in writer.root:
        writer.root["/AcroForm"] = generic.DictionaryObject({generic.pdf_name("/Fields"): generic.ArrayObject()})
        writer.update_root()
    form = writer.root["/AcroForm"]
    form["/Fields"].append(field)
    writer.update_container(form["/Fields"] if isinstance(form.raw_get("/Fields"), generic.IndirectObject) else form)
    page = page_ref.get_object()
    page.setdefault(generic.pdf_name("/Annots"), generic.ArrayObject()).append(field)
    writer.update_container(page["/Annots"] if isinstance(page.raw_get("/Annots"), generic.IndirectObject) else page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def without_form(data: bytes) -> bytes:
    """``data`` and a revision that drops the catalogue's form (the widgets stay on the page)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data))
    del writer.root["/AcroForm"]
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def signed(pades_world) -> bytes:
    return sign(pades_world, sample_pdf(1), PadesLevel.B_B)


@pytest.mark.parametrize("subfilter", ["/adbe.x509.rsa_sha1", "/adbe.pkcs7.sha1"])
def test_a_signature_of_a_kind_not_checked_makes_the_verdict_false(pades_world, signed, subfilter):
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(with_other_signature(signed, subfilter)))
    assert not verdict.verdict
    assert "'Legacy'" in verdict.reason and subfilter[1:] in verdict.reason, verdict.reason


def test_a_document_signed_only_with_a_kind_not_checked_says_so(pades_world):
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(with_other_signature(sample_pdf(1), "/adbe.pkcs7.sha1")))
    assert not verdict.verdict and not verdict.signatures
    assert "no signatures" not in verdict.reason and "'Legacy'" in verdict.reason, verdict.reason


def test_signatures_a_later_revision_removed_are_named(pades_world, signed):
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(without_form(signed)))
    assert not verdict.verdict
    assert "no signatures" not in verdict.reason, verdict.reason
    assert "'Signature1'" in verdict.reason and "removed" in verdict.reason, verdict.reason
