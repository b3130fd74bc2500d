"""Odd but common files: Ghostscript 10.00 (Debian 12) writes PDF 2.0 files whose XMP packet has
an attribute value without quotes. Such a file is signed, with its XMP repaired into well-formed
XML that keeps what could be read, and the signature validates."""

from __future__ import annotations

import io

import pikepdf
import pytest
from lxml import etree
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from tests.pades.test_signing import sign

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PDF = "http://ns.adobe.com/pdf/1.3/"
XMP = "http://ns.adobe.com/xap/1.0/"
DC = "http://purl.org/dc/elements/1.1/"

# The shape of Ghostscript 10.00.0's packet, with its fault: pdf:Producer's value has no quotes.
GHOSTSCRIPT_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<?adobe-xap-filters esc="CRLF"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP toolkit 2.9.1-13, framework 1.6">\n'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    'xmlns:iX="http://ns.adobe.com/iX/1.0/">\n'
    '<rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/" '
    'pdf:Producer=GPL Ghostscript 10.00.0/>\n'
    '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
    '<xmp:ModifyDate>2023-05-23T10:26:06+08:00</xmp:ModifyDate>'
    '<xmp:CreateDate>2023-05-23T10:26:06+08:00</xmp:CreateDate>'
    '<xmp:CreatorTool>UnknownApplication</xmp:CreatorTool></rdf:Description>\n'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="application/pdf">'
    '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Pedido</rdf:li></rdf:Alt></dc:title></rdf:Description>\n'
    '</rdf:RDF>\n</x:xmpmeta>\n'
    '<?xpacket end="w"?>').encode("utf-8")


def ghostscript_pdf(xmp: bytes = GHOSTSCRIPT_XMP) -> bytes:
    """A one-page PDF 2.0 file with Ghostscript's malformed XMP packet and its Info."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.Metadata = pdf.make_stream(xmp, Type=pikepdf.Name.Metadata, Subtype=pikepdf.Name.XML)
    pdf.docinfo["/Producer"] = "GPL Ghostscript 10.00.0"
    pdf.docinfo["/CreationDate"] = "D:20230523102606+08'00'"
    pdf.docinfo["/ModDate"] = "D:20230523102606+08'00'"
    out = io.BytesIO()
    pdf.save(out, force_version="2.0", fix_metadata_version=False)
    return out.getvalue()


def last_xmp(signed: bytes) -> etree._Element:
    """The XMP packet of the last revision, parsed strictly (raises if it is not well-formed)."""
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        data = pdf.Root.Metadata.read_bytes()
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def xmp_value(root: etree._Element, namespace: str, name: str) -> str | None:
    tag = f"{{{namespace}}}{name}"
    for description in root.iter(f"{{{RDF}}}Description"):
        if tag in description.attrib:
            return description.get(tag)
        element = description.find(tag)
        if element is not None:
            return "".join(element.itertext()).strip()
    return None


def test_the_sample_is_really_malformed():
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(GHOSTSCRIPT_XMP)
    assert ghostscript_pdf().startswith(b"%PDF-2.0")


@pytest.mark.parametrize("level", [PadesLevel.B_B, PadesLevel.B_LT], ids=lambda l: l.value)
def test_ghostscript_pdf_2_file_is_signed_with_its_xmp_repaired(pades_world, level):
    """B-LT too: pyHanko's own revision after the signature (validation data) reads the XMP."""
    service = pades_world[0]
    signed = sign(pades_world, ghostscript_pdf(), level)
    report, = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.trusted, report.summary

    root = last_xmp(signed)  # well-formed now
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        producer = str(pdf.docinfo["/Producer"])
    assert xmp_value(root, PDF, "Producer") == producer
    # What could be read is kept; the broken tag's leftovers are not left as text in the RDF.
    assert xmp_value(root, XMP, "CreatorTool") == "UnknownApplication"
    assert xmp_value(root, XMP, "CreateDate") == "2023-05-23T10:26:06+08:00"
    assert xmp_value(root, DC, "title") == "Pedido"
    rdf = root.find(f"{{{RDF}}}RDF")
    assert all(not (child.tail or "").strip() for child in rdf) and not (rdf.text or "").strip()


def test_an_xmp_packet_with_nothing_readable_is_rebuilt(pades_world):
    service = pades_world[0]
    signed = sign(pades_world, ghostscript_pdf(b"<x:xmpmeta <<< not xml at all"), PadesLevel.B_B)
    report, = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid, report.summary
    root = last_xmp(signed)
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        assert xmp_value(root, PDF, "Producer") == str(pdf.docinfo["/Producer"])


# A packet with a DTD of its own: its entity references are dropped (never expanded), since written
# back without the DTD they would not be XML, and pyHanko's revision after the signature (B-LT)
# would then fail after the HSM had signed.
ENTITY_XMP = (
    '<?xml version="1.0"?><!DOCTYPE x:xmpmeta [<!ENTITY tool "Writer">]>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
    '<xmp:CreatorTool>Office &tool;</xmp:CreatorTool></rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def test_an_xmp_packet_with_entities_is_signed_at_b_lt_without_them(pades_world):
    service = pades_world[0]
    signed = sign(pades_world, ghostscript_pdf(ENTITY_XMP), PadesLevel.B_LT)
    report, = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.trusted, report.summary
    root = last_xmp(signed)  # well-formed, without the DTD
    assert next(root.iter(etree.Entity), None) is None
    assert xmp_value(root, XMP, "CreatorTool").strip() == "Office"


class _KeepingMetadata(IncrementalPdfFileWriter):
    """A writer that leaves the metadata as it is, as some signing tools do."""

    def _update_meta(self):
        return None


def test_a_signed_document_with_malformed_xmp_is_refused_not_repaired(pades_world):
    """Replacing the packet would make the earlier signature's later changes suspicious."""
    from tests.pades.test_certified_documents import certifier as make_certifier

    certifier = make_certifier.__wrapped__()
    writer = _KeepingMetadata(io.BytesIO(ghostscript_pdf()))
    out = io.BytesIO()
    signers.PdfSigner(signers.PdfSignatureMetadata(field_name="Earlier"), certifier[0]).sign_pdf(writer, output=out)
    with pytest.raises(InvalidArgument, match="XMP metadata is not well-formed"):
        sign(pades_world, out.getvalue(), PadesLevel.B_B)
