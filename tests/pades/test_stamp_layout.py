"""The stamp's text: set with leading, as large as its box allows within readable bounds, and a
box too small to read refused."""

from __future__ import annotations

import io
import re
import subprocess

import grpc
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.font import font_for_text
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from signserver.pades.stamp_layout import MAX_FONT_SIZE, MIN_FONT_SIZE, PADDING, fit_stamp, line_width
from tests.pades.test_document_api import api, collect, sign_request  # noqa: F401 (api is a fixture)
from tests.pades.test_signing import sign

SAMPLE = ["Weng Sam LUZIA KUAN", "Assinatura digital", "2017.05.23 10:26:06 +0800"]  # the documents' stamp
LONG_NAME = "Maria da Conceição Gonçalves Fernandes de Sousa Rodrigues"
DEFAULT_WIDTH, DEFAULT_HEIGHT = DEFAULT_BOX[2] - DEFAULT_BOX[0], DEFAULT_BOX[3] - DEFAULT_BOX[1]


def _subset(world, lines):
    return font_for_text(world[0].pades.font(), lines)


def _size_and_leading(signed: bytes) -> tuple[int, int]:
    """The font size (Tf) and line pitch (the Td between lines) the stamp was drawn with."""
    field = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0].sig_field
    content = field["/AP"]["/N"].data.decode("latin-1")
    size = int(re.search(r"/F1 (\d+) Tf", content).group(1))
    pitches = {float(p) for p in re.findall(r"-[\d.]+ (-[\d.]+) Td", content)}
    assert len(pitches) == 1, content
    return size, -int(pitches.pop())


def test_the_documents_sample_fills_the_default_box(pades_world):
    fit = fit_stamp(SAMPLE, _subset(pades_world, SAMPLE), DEFAULT_WIDTH, DEFAULT_HEIGHT)
    # Set solid and capped at 10 pt before; now as large as the box allows, on a 1.2 pitch.
    assert (fit.font_size, fit.leading) == (17, 21)
    assert fit.leading >= 1.2 * fit.font_size
    free_width, free_height = DEFAULT_WIDTH - 2 * PADDING, DEFAULT_HEIGHT - 2 * PADDING
    assert fit.width <= free_width and fit.height <= free_height
    assert fit.height > 0.85 * free_height  # one point more would not fit


def test_the_documents_sample_in_120_by_40(pades_world):
    fit = fit_stamp(SAMPLE, _subset(pades_world, SAMPLE), 120, 40)
    assert (fit.font_size, fit.leading) == (8, 10)
    assert fit.width <= 120 - 2 * PADDING and fit.height <= 40 - 2 * PADDING


def test_the_signed_stamp_is_drawn_at_the_fitted_size(pades_world):
    for box, expected in [(DEFAULT_BOX, None), ((36, 36, 156, 76), (8, 10))]:
        signed = sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(box=box))
        size, leading = _size_and_leading(signed)
        assert leading >= 1.2 * size
        if expected:
            assert (size, leading) == expected
        else:
            assert 14 <= size <= MAX_FONT_SIZE, size


def test_a_long_portuguese_name_is_fitted_or_refused(pades_world):
    lines = [LONG_NAME, *SAMPLE[1:]]
    subset = _subset(pades_world, lines)
    fit = fit_stamp(lines, subset, DEFAULT_WIDTH, DEFAULT_HEIGHT)
    assert MIN_FONT_SIZE <= fit.font_size < 10  # the width decides
    assert line_width(LONG_NAME, subset, fit.font_size) <= DEFAULT_WIDTH - 2 * PADDING
    assert line_width(LONG_NAME, subset, fit.font_size + 1) > DEFAULT_WIDTH - 2 * PADDING
    # 3.9 pt before, which nobody reads: now refused, naming the box and the smallest size.
    with pytest.raises(InvalidArgument, match=r"stamp box \(120 x 40 pt\) is too small.* 6 pt"):
        fit_stamp(lines, subset, 120, 40)


def test_a_box_too_small_to_read_is_refused_when_signing(pades_world):
    with pytest.raises(InvalidArgument, match=r"stamp box \(90 x 24 pt\) is too small.*6 pt.*needs a box of"):
        sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(box=(36, 36, 126, 60)))


def test_a_box_too_small_to_read_is_invalid_argument_over_grpc(api):  # noqa: F811 (the fixture)
    stub, metadata, created = api
    with pytest.raises(grpc.RpcError) as refused:
        collect(stub.SignPdf(sign_request(created, sample_pdf(1), x1=36, y1=36, x2=126, y2=60), metadata=metadata,
                             timeout=60))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "stamp box (90 x 24 pt) is too small" in refused.value.details()


def test_text_beside_a_qr_code_fits_the_room_left(pades_world):
    signed = sign(pades_world, sample_pdf(1), PadesLevel.B_B,
                  StampOptions(verification_url="https://verify.example/d/1"))
    size, leading = _size_and_leading(signed)
    assert leading >= 1.2 * size
    room = DEFAULT_WIDTH - DEFAULT_HEIGHT - 2 * PADDING  # the code is a square as high as the box
    text = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0].sig_field["/AP"]["/N"].data.decode("latin-1")
    widths = [float(w) for w in re.findall(r"TJ ([\d.]+) 0 Td", text)]
    assert widths and max(widths) <= room
    assert 10 < size  # more than the old cap, in the room beside the code


def _dark_row_runs(image) -> list[tuple[int, int]]:
    """The runs of pixel rows with ink in them, top to bottom."""
    runs, start = [], None
    for y in range(image.height):
        inked = image.crop((0, y, image.width, y + 1)).getextrema()[0] < 160
        if inked and start is None:
            start = y
        if not inked and start is not None:
            runs.append((start, y))
            start = None
    if start is not None:
        runs.append((start, image.height))
    return runs


@pytest.mark.parametrize("box", [DEFAULT_BOX, (36, 36, 156, 76)], ids=["default box", "120x40"])
def test_rendered_lines_do_not_touch(pades_world, tmp_path, box):
    # The caption's 簽 fills the em: set solid, the "g" of "Weng" above ran into it.
    signed = sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(caption="數碼簽署", box=box))
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    scale = 4  # 288 dpi
    subprocess.run(["pdftoppm", "-r", str(72 * scale), "-gray", "-png", "-singlefile", str(path),
                    str(tmp_path / "page")], check=True, capture_output=True)
    from PIL import Image

    page = Image.open(tmp_path / "page.png").convert("L")
    x1, y1, x2, y2 = box
    inset = 2  # inside the 1 pt border
    inside = page.crop((int((x1 + inset) * scale), page.height - int((y2 - inset) * scale),
                        int((x2 - inset) * scale), page.height - int((y1 + inset) * scale)))
    runs = _dark_row_runs(inside)
    assert len(runs) == 3, runs  # three lines, with blank rows between them
    gaps = [below[0] - above[1] for above, below in zip(runs, runs[1:])]
    assert min(gaps) >= 2, gaps
