"""A signature field whose value (/V) is set but is no signature dictionary is damage:
verification cannot read such a document, so signing refuses it, before the holder's factors are
asked for, rather than sign it into a document no verification reads."""

from __future__ import annotations

import io

import pytest

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.signable import check_signable
from signserver.pades.stamp import StampOptions
from tests.pades.test_damaged_documents import build_pdf
from tests.pades.test_signing import sign

STAMPS = [StampOptions(), StampOptions(visible=False), StampOptions(field_name="New")]
STAMP_IDS = ["visible", "invisible", "named"]


def document(value: str) -> bytes:
    widget = f"<< /Type /Annot /Subtype /Widget /FT /Sig /T (Old) /V {value} /F 4 /Rect [0 0 0 0] /P 3 0 R >>"
    return build_pdf({1: "<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] /SigFlags 3 >> >>",
                      2: "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      3: "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots [4 0 R] >>",
                      4: widget, 7: "42"})


@pytest.mark.parametrize("value", ["5", "(text)", "[1 2]", "/Name", "7 0 R"])
@pytest.mark.parametrize("stamp", STAMPS, ids=STAMP_IDS)
def test_a_field_valued_with_no_signature_is_refused_before_the_factors(pades_world, value, stamp):
    service = pades_world[0]
    data = document(value)
    with pytest.raises(InvalidArgument, match="damaged"):
        check_signable(io.BytesIO(data), stamp, None, service.pades.font(), service.clock.now())
    with pytest.raises(InvalidArgument, match="damaged"):
        sign(pades_world, data, PadesLevel.B_B, stamp)


@pytest.mark.parametrize("value", ["0", "null"])
@pytest.mark.parametrize("stamp", STAMPS, ids=STAMP_IDS)
def test_a_field_valued_with_nothing_is_an_empty_one(pades_world, value, stamp):
    signed = sign(pades_world, document(value), PadesLevel.B_B, stamp)
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(signed))
    assert verdict.verdict, verdict.reason
