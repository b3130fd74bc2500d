"""The stamp lands where a reader sees it, upright, whatever the page's geometry: a MediaBox that
does not start at 0,0, a CropBox inset inside it, a /Rotate of 90, 180 or 270 (also inherited from
the page tree). Each signed page is rendered by poppler's pdftoppm, and the stamp's pixels are
found on the image: where they are, and which way its text runs (compared with the same stamp on a
plain page). The renderings are kept under out/page-geometry/<store>/ for a person to look at."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy
import pikepdf
import pytest
from PIL import Image

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from tests.conftest import TEST_STORE
from tests.pades.test_signing import sign

DPI = 50
SCALE = DPI / 72  # pixels per point
# One folder per store: `make test` runs the SQLite and the PostgreSQL suites at once in one
# checkout, and with one folder a run's pdftoppm read the PDF the other run was writing
# ("Syntax Error: Leftover args in content stream").
OUT = Path(__file__).resolve().parents[2] / "out" / "page-geometry" / TEST_STORE
A4 = [0, 0, 595, 842]


def page_pdf(media=A4, crop=None, rotate=None, inherit=False) -> bytes:
    """A one-page document with a blank page of the given geometry; with ``inherit`` the
    CropBox and /Rotate sit on the page tree node, for the page to inherit."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(media[2] - media[0], media[3] - media[1]))
    page = pdf.pages[0].obj
    page.MediaBox = pikepdf.Array(media)
    holder = pdf.Root.Pages if inherit else page
    if crop is not None:
        holder.CropBox = pikepdf.Array(crop)
    if rotate is not None:
        holder.Rotate = rotate
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def render(signed: bytes, name: str) -> numpy.ndarray:
    """The page as displayed, in grey levels (0 black), at DPI; also saved under OUT."""
    OUT.mkdir(parents=True, exist_ok=True)
    pdf = OUT / f"{name}.pdf"
    pdf.write_bytes(signed)
    # -cropbox: show the CropBox, as viewers do (pdftoppm shows the whole MediaBox by default).
    result = subprocess.run(["pdftoppm", "-r", str(DPI), "-cropbox", "-png", "-singlefile", str(pdf), str(OUT / name)],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "rror" not in result.stderr, result.stderr
    return numpy.asarray(Image.open(OUT / f"{name}.png").convert("L"))


def ink_box(ink: numpy.ndarray) -> tuple[int, int, int, int]:
    """The bounding box (left, top, right, bottom; image pixels) of the true pixels."""
    rows, columns = numpy.nonzero(ink)
    assert rows.size, "nothing is drawn"
    return int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1


def expected_pixels(image: numpy.ndarray, rect) -> tuple[float, float, float, float]:
    """Where ``rect`` (points from the displayed bottom-left corner) is on the image."""
    height = image.shape[0]
    x1, y1, x2, y2 = rect
    return x1 * SCALE, height - y2 * SCALE, x2 * SCALE, height - y1 * SCALE


def text_of(image: numpy.ndarray, box) -> numpy.ndarray:
    """The stamp's text (1 where ink is), cut to the text's own bounding box from inside the
    stamp's border."""
    left, top, right, bottom = box
    ink = image[top + 3:bottom - 3, left + 3:right - 3] < 160
    left, top, right, bottom = ink_box(ink)
    return ink[top:bottom, left:right].astype(float)


def assert_stamp_at(image: numpy.ndarray, rect) -> tuple[int, int, int, int]:
    # The page is blank: anything not white is the stamp. (Its border is a thin grey line at
    # this resolution, which a darker threshold may miss.)
    box = ink_box(image < 250)
    expected = expected_pixels(image, rect)
    assert all(abs(found - want) <= 2.5 for found, want in zip(box, expected)), (box, expected)
    return box


@pytest.fixture(scope="module")
def upright_text(pades_world) -> numpy.ndarray:
    """The default stamp's text on a plain A4 page: what upright looks like."""
    image = render(sign(pades_world, page_pdf(), PadesLevel.B_B), "plain")
    return text_of(image, assert_stamp_at(image, DEFAULT_BOX))


def assert_reads_upright(text: numpy.ndarray, upright: numpy.ndarray) -> None:
    """``text`` is the upright stamp's text (the signing time may differ by a second), not the
    same text turned sideways or upside down."""
    ink_rows, ink_columns = numpy.nonzero(text)
    # Lines of upright text in a wide box run across it: its ink spreads wider than tall.
    assert numpy.ptp(ink_columns) > numpy.ptp(ink_rows), "the text runs sideways"
    assert all(abs(a - b) <= 2 for a, b in zip(text.shape, upright.shape)), (text.shape, upright.shape)
    rows, columns = min(text.shape[0], upright.shape[0]), min(text.shape[1], upright.shape[1])
    text, upright = text[:rows, :columns], upright[:rows, :columns]
    same = numpy.abs(text - upright).mean()
    upside_down = numpy.abs(text - upright[::-1, ::-1]).mean()
    assert same < 0.5 * upside_down, (same, upside_down)


@pytest.mark.parametrize("case,document", [
    ("offset-mediabox", lambda: page_pdf(media=[100, 200, 695, 1042])),
    ("negative-mediabox", lambda: page_pdf(media=[-300, -421, 295, 421])),
    ("cropbox-inset", lambda: page_pdf(crop=[50, 60, 545, 782])),
    ("cropbox-past-mediabox", lambda: page_pdf(media=[0, 0, 595, 842], crop=[-40, 30, 700, 800])),
    ("rotate-90", lambda: page_pdf(rotate=90)),
    ("rotate-180", lambda: page_pdf(rotate=180)),
    ("rotate-270", lambda: page_pdf(rotate=270)),
    ("rotate-minus-90", lambda: page_pdf(rotate=-90)),
    ("rotate-90-cropped-offset", lambda: page_pdf(media=[100, 200, 695, 1042], crop=[150, 250, 645, 1000],
                                                  rotate=90)),
    ("inherited-rotate-270-cropbox", lambda: page_pdf(crop=[50, 60, 545, 782], rotate=270, inherit=True)),
])
def test_default_stamp_at_the_displayed_bottom_left_and_upright(pades_world, upright_text, case, document):
    image = render(sign(pades_world, document(), PadesLevel.B_B), case)
    box = assert_stamp_at(image, DEFAULT_BOX)
    assert_reads_upright(text_of(image, box), upright_text)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_rect_in_the_top_right_corner_as_displayed(pades_world, upright_text, rotate):
    document = page_pdf(media=[100, 200, 695, 1042], crop=[120, 230, 675, 1012], rotate=rotate)
    width, height = (555, 782) if rotate in (0, 180) else (782, 555)
    x1, y1, x2, y2 = DEFAULT_BOX
    rect = (width - x2, height - y2, width - x1, height - y1)
    image = render(sign(pades_world, document, PadesLevel.B_B, StampOptions(box=rect)), f"top-right-{rotate}")
    assert image.shape[1] == pytest.approx(width * SCALE, abs=1.5)
    box = assert_stamp_at(image, rect)
    assert_reads_upright(text_of(image, box), upright_text)


def test_existing_empty_field_on_a_turned_page_reads_upright(pades_world, upright_text):
    pdf = pikepdf.open(io.BytesIO(page_pdf(rotate=90)))
    page = pdf.pages[0].obj
    # The default box at the displayed bottom-left of A4 turned by 90 degrees, in page space.
    widget = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Widget, FT=pikepdf.Name.Sig, T="Existing", F=4,
        Rect=[487, 36, 559, 276], P=page))
    page.Annots = pikepdf.Array([widget])
    pdf.Root.AcroForm = pikepdf.Dictionary(Fields=[widget], SigFlags=3)
    out = io.BytesIO()
    pdf.save(out)
    signed = sign(pades_world, out.getvalue(), PadesLevel.B_B, StampOptions(field_name="Existing"))
    image = render(signed, "existing-field-rotate-90")
    box = assert_stamp_at(image, DEFAULT_BOX)
    assert_reads_upright(text_of(image, box), upright_text)


def test_signed_pages_validate(pades_world):
    service = pades_world[0]
    signed = sign(pades_world, page_pdf(media=[100, 200, 695, 1042], crop=[150, 250, 645, 1000], rotate=90),
                  PadesLevel.B_B)
    report = service.pades.verify_pdf(io.BytesIO(signed)).signatures[0]
    assert report.intact and report.valid, report.summary


@pytest.mark.parametrize("document,rect,limit", [
    # Inside the MediaBox but past the CropBox: a reader would clip it.
    (page_pdf(crop=[50, 60, 545, 782]), (300, 40, 540, 112), "0,0,495,722"),
    # Fits a portrait page, not the same page turned to landscape.
    (page_pdf(rotate=90), (36, 700, 276, 772), "0,0,842,595"),
    # Absolute coordinates of a page whose MediaBox starts at 100,200 are no longer taken as such.
    (page_pdf(media=[100, 200, 695, 1042]), (136, 236, 376, 908), "0,0,595,842"),
])
def test_rect_off_the_page_as_displayed_is_refused(pades_world, document, rect, limit):
    with pytest.raises(InvalidArgument, match=f"off the page.*{limit}"):
        sign(pades_world, document, PadesLevel.B_B, StampOptions(box=rect))
