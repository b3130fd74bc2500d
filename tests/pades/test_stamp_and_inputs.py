"""The visible stamp as a person sees it, a second signature, offline long-term validation, and
every bad input's error."""

from __future__ import annotations

import io
import subprocess

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore

from signserver.errors import InvalidArgument
from signserver.pades.cms_signer import to_asn1
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from tests.pades.test_signing import sign


def test_stamp_text_is_there_and_drawn(pades_world, tmp_path):
    signed = sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(caption="數碼簽署", box=(300, 40, 560, 120)))
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True).stdout
    assert "翁心 Weng Sam LUZIA KUAN" in text and "數碼簽署" in text
    assert "+0800" in text  # Asia/Macau
    # The stamp font is embedded as a subset font program poppler can read.
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True)
    embedded = [line for line in fonts.stdout.splitlines() if "NotoSansCJK" in line]
    assert len(embedded) == 1 and "CID Type 0C" in embedded[0], fonts.stdout
    assert embedded[0].split()[-5:-2] == ["yes", "yes", "yes"], embedded  # embedded, subset, ToUnicode
    assert "rror" not in fonts.stderr, fonts.stderr
    rendered = subprocess.run(["pdftoppm", "-r", "72", "-gray", "-png", "-singlefile", str(path),
                               str(tmp_path / "page")], check=True, capture_output=True, text=True)
    assert "rror" not in rendered.stderr, rendered.stderr  # e.g. a font program poppler cannot parse
    from PIL import Image

    page = Image.open(tmp_path / "page.png").convert("L")
    height = page.height
    # The stamp's rectangle in image coordinates (origin top-left, 72 dpi: 1 px per point).
    stamp = page.crop((300, height - 120, 560, height - 40))
    assert stamp.getextrema()[0] < 128, "the stamp rectangle is blank"
    empty = page.crop((300, 5, 560, 30))
    assert empty.getextrema() == (255, 255)


def test_invisible_signature(pades_world):
    service = pades_world[0]
    signed = sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(visible=False))
    assert service.pades.verify_pdf(io.BytesIO(signed)).signatures[0].valid


def test_second_signature_keeps_the_first_valid(pades_world):
    service = pades_world[0]
    once = sign(pades_world, sample_pdf(1), PadesLevel.B_T)
    twice = sign(pades_world, once, PadesLevel.B_T, StampOptions(box=(300, 40, 560, 110)))
    reports = service.pades.verify_pdf(io.BytesIO(twice)).signatures
    assert len(reports) == 2
    assert all(r.intact and r.valid and r.trusted for r in reports)
    first = reports[0]
    assert first.modified_after_signing and first.modification_allowed


@pytest.mark.parametrize("level", [PadesLevel.B_LT, PadesLevel.B_LTA], ids=lambda l: l.value)
def test_long_term_validation_uses_only_the_embedded_data(pades_world, level):
    service = pades_world[0]
    signed = sign(pades_world, sample_pdf(1), level)
    _, root = service.ca.chain()
    reader = PdfFileReader(io.BytesIO(signed))
    # Trust in the root and the document's own DSS: no CRL handed over, nothing fetched, and
    # revocation checking required, as a validator would do once the CA's endpoints are gone.
    context = DocumentSecurityStore.read_dss(reader).as_validation_context(
        {"trust_roots": [to_asn1(root)], "allow_fetching": False, "revocation_mode": "hard-fail"})
    status = validate_pdf_signature(reader.embedded_signatures[0], signer_validation_context=context)
    assert status.valid and status.trusted, status.summary()


@pytest.mark.parametrize("case,stamp,message", [
    ("not a pdf", StampOptions(), "not a readable PDF"),
    ("truncated", StampOptions(), "not a readable PDF"),
    ("page out of range", StampOptions(page=7), "page 8 is out of range"),  # the options count from 0, people from 1
    ("rectangle off the page", StampOptions(box=(500, 40, 900, 100)), "off the page"),
    ("text the font cannot draw", StampOptions(caption="Assinatura \U0001F600"), "cannot draw"),
    ("bad time zone", StampOptions(time_zone="Mars/Olympus"), "unknown time zone"),
    # Names the time zone database cannot take as a file name: a folder of it, one too long, a
    # file of it that is not a zone.
    ("time zone that names a region", StampOptions(time_zone="America"), "unknown time zone"),
    ("overlong time zone", StampOptions(time_zone="x" * 300), "unknown time zone"),
    ("time zone that names a table", StampOptions(time_zone="iso3166.tab"), "unknown time zone"),
])
def test_bad_input_gets_a_clear_error(pades_world, case, stamp, message):
    data = {"not a pdf": b"hello, I am not a PDF", "truncated": sample_pdf(1)[:300]}.get(case, sample_pdf(1))
    with pytest.raises(InvalidArgument, match=message):
        sign(pades_world, data, PadesLevel.B_B, stamp)


def test_signed_field_cannot_be_signed_again(pades_world):
    once = sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(field_name="Approval"))
    with pytest.raises(InvalidArgument, match="already signed"):
        sign(pades_world, once, PadesLevel.B_B, StampOptions(field_name="Approval"))
