"""Signature field names on documents that already have a form: a new signature's default name
is one no field of the document has, whatever type that field is and whatever the earlier
signatures were named; a name that belongs to a field of another type is refused as such."""

from __future__ import annotations

import io

import pikepdf
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from tests.pades.test_signing import sign


def with_field(name: str, field_type: str, rect=(100, 100, 300, 120), flags: int = 4) -> bytes:
    """A one-page document whose form holds one empty field ``name`` of ``field_type``."""
    pdf = pikepdf.open(io.BytesIO(sample_pdf(1)))
    page = pdf.pages[0]
    widget = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Widget, FT=pikepdf.Name(field_type),
        T=pikepdf.String(name), Rect=list(rect), P=page.obj, F=flags))
    page.obj.Annots = pikepdf.Array([widget])
    pdf.Root.AcroForm = pikepdf.Dictionary(Fields=[widget])
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def signatures(signed: bytes) -> dict[str, list]:
    """Each signature's field name and its widget's rectangle."""
    reader = PdfFileReader(io.BytesIO(signed))
    return {str(s.field_name): [float(v) for v in s.sig_field["/Rect"]] for s in reader.embedded_signatures}


def verdicts(world, signed: bytes) -> list[bool]:
    return [r.verdict for r in world[0].pades.verify_pdf(io.BytesIO(signed)).signatures]


def test_a_text_field_with_the_default_name_is_left_alone(pades_world):
    signed = sign(pades_world, with_field("Signature1", "/Tx"), PadesLevel.B_B)
    assert list(signatures(signed)) == ["Signature2"]
    assert verdicts(pades_world, signed) == [True]


def test_a_document_signed_in_a_field_named_as_a_default_is_signed_again(pades_world):
    once = sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(field_name="Signature2"))
    twice = sign(pades_world, once, PadesLevel.B_B)
    assert sorted(signatures(twice)) == ["Signature2", "Signature3"]
    assert verdicts(pades_world, twice) == [True, True]


def test_a_visible_stamp_does_not_go_into_an_unnamed_invisible_field(pades_world):
    signed = sign(pades_world, with_field("Signature2", "/Sig", rect=(0, 0, 0, 0), flags=132), PadesLevel.B_B)
    placed = signatures(signed)
    assert list(placed) == ["Signature3"]
    assert placed["Signature3"] == list(DEFAULT_BOX)


@pytest.mark.parametrize("field_type,kind", [("/Tx", "text"), ("/Btn", "button"), ("/Ch", "choice")])
def test_a_field_of_another_type_is_refused_by_name(pades_world, field_type, kind):
    with pytest.raises(InvalidArgument, match=f"'Name' is a {kind} field, not a signature field") as refused:
        sign(pades_world, with_field("Name", field_type), PadesLevel.B_B, StampOptions(field_name="Name"))
    assert "damaged" not in str(refused.value)


def test_a_new_field_under_a_field_that_is_not_a_group_is_refused(pades_world):
    with pytest.raises(InvalidArgument, match="'Name' is a text field"):
        sign(pades_world, with_field("Name", "/Tx"), PadesLevel.B_B, StampOptions(field_name="Name.Signature"))
