"""An existing signature field's widget need not name its page (/P is optional, ISO 32000-1
12.5.2): its page is then the one whose /Annots lists it, and the stamp is turned and scaled for
that page as for one /P names."""

from __future__ import annotations

import io

import pytest
from pyhanko.pdf_utils.generic import IndirectObject
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.pades.document import PadesLevel
from signserver.pades.page_tree import page_holding
from signserver.pades.stamp import StampOptions
from tests.pades.test_damaged_documents import build_pdf
from tests.pades.test_real_numbers import stamp_of
from tests.pades.test_signing import sign

FORM = "/AcroForm << /Fields [9 0 R] /SigFlags 3 >>"
PAGE = "<< /Type /Page /Parent {parent} 0 R /MediaBox [0 0 595 842] {extra} >>"
# 72 x 240 on the page, 240 x 72 as a reader shows a page turned by 90 degrees.
WIDGET = "<< /Type /Annot /Subtype /Widget /FT /Sig /T (Sig1) /F 4 /Rect [100 100 172 340] {extra} >>"


def document(widget_extra: str = "", turned_extra: str = "/Rotate 90") -> bytes:
    """Three pages, the widget on the second (turned) one, within a nested page tree."""
    return build_pdf({
        1: f"<< /Type /Catalog /Pages 2 0 R {FORM} >>",
        2: "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 3 >>",
        3: PAGE.format(parent=2, extra="/Annots [8 0 R]"),
        4: "<< /Type /Pages /Parent 2 0 R /Kids [5 0 R 6 0 R] /Count 2 >>",
        5: PAGE.format(parent=4, extra=f"{turned_extra} /Annots [7 0 R 9 0 R]"),
        6: PAGE.format(parent=4, extra=""),
        7: "<< /Type /Annot /Subtype /Text /Rect [0 0 10 10] >>",
        8: "<< /Type /Annot /Subtype /Text /Rect [0 0 10 10] >>",
        9: WIDGET.format(extra=widget_extra),
    })


@pytest.mark.parametrize("widget_extra", ["/P 5 0 R", ""], ids=["with-P", "without-P"])
def test_an_existing_field_on_a_turned_page_gets_an_upright_stamp(pades_world, widget_extra):
    signed = sign(pades_world, document(widget_extra), PadesLevel.B_B, StampOptions(field_name="Sig1"))
    rect, matrix = stamp_of(signed)
    assert rect == [100, 100, 172, 340]
    assert matrix == [0, 1, -1, 0, 0, 0]
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(signed))
    assert verdict.verdict, verdict.reason


def test_an_existing_field_without_its_page_takes_its_pages_unit(pades_world):
    signed = sign(pades_world, document(turned_extra="/UserUnit 2"), PadesLevel.B_B, StampOptions(field_name="Sig1"))
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    x1, y1, x2, y2 = (float(v) for v in signature.sig_field["/AP"]["/N"].get_object()["/BBox"])
    assert (abs(x2 - x1), abs(y2 - y1)) == (144, 480)  # laid out in points: twice the page's units


def widget_of(data: bytes) -> tuple[PdfFileReader, IndirectObject]:
    reader = PdfFileReader(io.BytesIO(data), strict=False)
    return reader, reader.root["/AcroForm"].raw_get("/Fields").get_object().raw_get(0)


def test_the_page_holding_a_widget_is_found():
    reader, widget = widget_of(document())
    page = page_holding(reader.root, widget)
    assert page is not None and page["/Rotate"] == 90


@pytest.mark.parametrize("pages", [
    "<< /Type /Pages /Kids [2 0 R] /Count 1 >>",  # the tree loops back on itself
    "<< /Type /Pages /Kids [4 0 R] /Count 1 >>",  # a kid that is no object of the document
    "<< /Type /Pages /Kids 5 /Count 1 >>",  # no array of kids
], ids=["loop", "missing-kid", "kids-no-array"])
def test_a_widget_on_no_page_of_a_broken_tree_is_on_none(pages):
    data = build_pdf({1: f"<< /Type /Catalog /Pages 2 0 R {FORM} >>", 2: pages, 9: WIDGET.format(extra="")})
    reader, widget = widget_of(data)
    assert page_holding(reader.root, widget) is None
