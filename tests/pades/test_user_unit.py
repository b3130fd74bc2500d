"""Pages with a /UserUnit (ISO 32000-1 14.11.2.2; large drawings use it): the page's units are
that many points, so the stamp's rectangle, given in points from the displayed bottom-left, is
divided by it into the page's own units, and the stamp is laid out in points (its appearance's
box) for the reader to scale into the widget. poppler ignores /UserUnit, so this is checked on
the objects rather than on a rendering."""

from __future__ import annotations

import io

import pikepdf
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from tests.pades.test_signing import sign

LETTER = [0, 0, 612, 792]


def page_with_unit(unit, media=LETTER, rotate=None) -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(media[2] - media[0], media[3] - media[1]))
    page = pdf.pages[0].obj
    page.MediaBox = pikepdf.Array(media)
    page.UserUnit = unit
    if rotate is not None:
        page.Rotate = rotate
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def widget(signed: bytes):
    """The signature widget's /Rect and its appearance's /BBox (width, height)."""
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    rect = [float(v) for v in signature.sig_field["/Rect"]]
    appearance = signature.sig_field["/AP"]["/N"].get_object()
    x1, y1, x2, y2 = (float(v) for v in appearance["/BBox"])
    return rect, (abs(x2 - x1), abs(y2 - y1))  # pyHanko writes the box top-down: 0 h w 0


def test_the_default_stamp_is_in_points_on_a_page_of_two_point_units(pades_world):
    rect, bbox = widget(sign(pades_world, page_with_unit(2), PadesLevel.B_B))
    assert rect == [18, 18, 138, 54]
    assert bbox == pytest.approx((240, 72))


def test_a_rectangle_anywhere_on_the_displayed_page_is_taken(pades_world):
    # The page shows 1224 x 1584 points: this rectangle is near its top-right corner.
    rect, _ = widget(sign(pades_world, page_with_unit(2), PadesLevel.B_B, StampOptions(box=(900, 1400, 1140, 1472))))
    assert rect == [450, 700, 570, 736]


def test_a_turned_page_with_a_unit(pades_world):
    rect, bbox = widget(sign(pades_world, page_with_unit(4, rotate=90), PadesLevel.B_B))
    x1, y1, x2, y2 = DEFAULT_BOX
    assert rect == [612 - y2 / 4, x1 / 4, 612 - y1 / 4, x2 / 4]
    assert bbox == pytest.approx((240, 72))


def test_a_rectangle_off_the_displayed_page_is_refused_with_its_size_in_points(pades_world):
    with pytest.raises(InvalidArgument, match="0,0,1224,1584"):
        sign(pades_world, page_with_unit(2), PadesLevel.B_B, StampOptions(box=(1100, 36, 1300, 108)))


@pytest.mark.parametrize("unit", [0, -2, "(two)"])
def test_a_unit_that_is_no_positive_number_is_taken_as_one(pades_world, unit):
    pdf = pikepdf.open(io.BytesIO(page_with_unit(1)))
    pdf.pages[0].obj.UserUnit = pikepdf.Object.parse(str(unit).encode()) if isinstance(unit, str) else unit
    out = io.BytesIO()
    pdf.save(out)
    rect, _ = widget(sign(pades_world, out.getvalue(), PadesLevel.B_B))
    assert rect == list(DEFAULT_BOX)
