"""Real numbers in the objects signing rewrites (the stamped page, the catalogue, the AcroForm)
are written back in PDF's syntax, which has no exponent: the signed document reads again, also
to the service's own verification. A page's /UserUnit or /Rotate written as a real (2.5, 2.0,
90.0) counts as the number it is."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from pyhanko.pdf_utils.generic import FloatObject
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.real_numbers import fixed_point
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from tests.pades.test_damaged_documents import build_pdf
from tests.pades.test_signing import sign

TINY = "0.00000001"
HUGE = "1" + "0" * 40 + ".0"  # integral, more digits than a Decimal context's 28


def document(page_extra: str = "", catalogue_extra: str = "") -> bytes:
    return build_pdf({1: f"<< /Type /Catalog /Pages 2 0 R {catalogue_extra} >>",
                      2: "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      3: f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] {page_extra} >>"})


@pytest.mark.parametrize("text, written", [(TINY, TINY), ("-" + TINY, "-" + TINY), ("2.5", "2.5"), ("2.0", "2"),
                                           ("123.4500", "123.4500"), (HUGE, HUGE[:-2]), ("-0.0", "-0")])
def test_a_real_is_written_fixed_point(text, written):
    assert fixed_point(Decimal(text)) == written
    out = io.BytesIO()
    FloatObject(text).write_to_stream(out)  # signing's writer installs the fixed-point writing
    assert out.getvalue() == written.encode()


@pytest.mark.parametrize("page_extra, catalogue_extra", [
    (f"/CropBox [0 {TINY} 595 842]", ""),
    ("", f"/ViewerPreferences << /Scale {TINY} >>"),
    (f"/Scale {HUGE}", ""),
], ids=["tiny-on-the-page", "tiny-in-the-catalogue", "huge-on-the-page"])
@pytest.mark.parametrize("visible", [True, False], ids=["visible", "invisible"])
def test_a_signed_document_with_odd_reals_reads_again(pades_world, page_extra, catalogue_extra, visible):
    data = document(page_extra, catalogue_extra)
    signed = sign(pades_world, data, PadesLevel.B_B, StampOptions(visible=visible))
    assert b"E-" not in signed[len(data):]
    PdfFileReader(io.BytesIO(signed), strict=True).root["/Pages"]["/Kids"][0].get_object()
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(signed))
    assert verdict.verdict, verdict.reason


def stamp_of(signed: bytes):
    """The signature widget's /Rect and its appearance's /Matrix (None if it has none)."""
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    appearance = signature.sig_field["/AP"]["/N"].get_object()
    matrix = [int(v) for v in appearance["/Matrix"]] if "/Matrix" in appearance else None
    return [float(v) for v in signature.sig_field["/Rect"]], matrix


@pytest.mark.parametrize("unit", ["2.5", "2.0"])
def test_a_user_unit_written_as_a_real_scales_the_stamp(pades_world, unit):
    rect, _ = stamp_of(sign(pades_world, document(f"/UserUnit {unit}"), PadesLevel.B_B))
    assert rect == pytest.approx([v / float(unit) for v in DEFAULT_BOX])


def test_a_rectangle_off_a_page_of_real_units_is_refused_with_its_size_in_points(pades_world):
    with pytest.raises(InvalidArgument, match="0,0,1190,1684"):
        sign(pades_world, document("/UserUnit 2.0"), PadesLevel.B_B, StampOptions(box=(1000, 36, 1200, 108)))


@pytest.mark.parametrize("rotate", ["90.0", "-270.0"])
def test_a_rotation_written_as_a_real_turns_the_stamp(pades_world, rotate):
    rect, matrix = stamp_of(sign(pades_world, document(f"/Rotate {rotate}"), PadesLevel.B_B))
    x1, y1, x2, y2 = DEFAULT_BOX
    assert rect == pytest.approx([595 - y2, x1, 595 - y1, x2])
    assert matrix == [0, 1, -1, 0, 0, 0]
