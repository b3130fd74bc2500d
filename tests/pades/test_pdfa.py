"""PDF/A stays PDF/A: a PDF/A-1a or PDF/A-2b file (shaped like LibreOffice's: Info and XMP that
agree, a PDF/A identification, an sRGB output intent) signed with a visible stamp.

No PDF/A validator is available here; the tests evaluate these rules on the signed file's last
revision:
- ISO 19005-1 6.7.3 / 19005-2 6.6.2.3.1: each Info entry equals its XMP counterpart: /Producer
  and pdf:Producer, /ModDate and xmp:ModifyDate (the same instant), /CreationDate and
  xmp:CreateDate, /Creator and xmp:CreatorTool, /Title and dc:title.
- ISO 19005-1 6.7.11 / 19005-2 6.6.4: the identification pdfaid:part and pdfaid:conformance is
  kept as it was.
- ISO 19005-1 6.2.2 / 19005-2 6.2.3: the /OutputIntents with its GTS_PDFA1 intent and the same
  ICC profile is kept.
- ISO 19005-1 6.3.5 / 19005-2 6.2.11.4.2: every embedded CIDFont subset (the stamp's) has a
  /CIDSet whose bits are exactly the CIDs its font program holds.
- ISO 19005-1 6.7.5: the XMP packet header has no bytes or encoding attribute; the packet is
  well-formed XML (19005-2 6.6.2.1) and its stream is not filtered.
"""

from __future__ import annotations

import datetime
import io
import re

import pikepdf
import pytest
from fontTools.cffLib import CFFFontSet
from lxml import etree
from PIL import ImageCms
from pyhanko.pdf_utils.generic import parse_pdf_date
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock, SystemClock
from signserver.pades.document import PadesLevel
from signserver.pades.pdfa import cid_set
from tests.conftest import enrol, service_with_ca
from tests.pades.test_odd_files import DC, PDF, RDF, XMP, last_xmp, xmp_value
from tests.pades.test_signing import sign

PDFAID = "http://www.aiim.org/pdfa/ns/id/"


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # made once: it holds its time


def pdfa_pdf(part: int, conformance: str) -> bytes:
    """A one-page file with LibreOffice's PDF/A markers: XMP with pdfaid in descriptions of their
    own, Info agreeing with it, and an output intent with an sRGB ICC profile."""
    xmp = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        f'<rdf:RDF xmlns:rdf="{RDF}">\n'
        f'<rdf:Description rdf:about="" xmlns:pdfaid="{PDFAID}">'
        f'<pdfaid:part>{part}</pdfaid:part><pdfaid:conformance>{conformance}</pdfaid:conformance>'
        '</rdf:Description>\n'
        f'<rdf:Description rdf:about="" xmlns:pdf="{PDF}"><pdf:Producer>LibreOffice 7.4</pdf:Producer>'
        '</rdf:Description>\n'
        f'<rdf:Description rdf:about="" xmlns:xmp="{XMP}"><xmp:CreatorTool>Writer</xmp:CreatorTool>'
        '<xmp:CreateDate>2017-05-23T10:26:06+08:00</xmp:CreateDate>'
        '<xmp:ModifyDate>2017-05-23T10:26:06+08:00</xmp:ModifyDate></rdf:Description>\n'
        f'<rdf:Description rdf:about="" xmlns:dc="{DC}"><dc:title><rdf:Alt>'
        '<rdf:li xml:lang="x-default">Pedido de renovação</rdf:li></rdf:Alt></dc:title></rdf:Description>\n'
        '</rdf:RDF>\n</x:xmpmeta>\n' + " " * 2000 + '\n<?xpacket end="w"?>').encode("utf-8")
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.Metadata = pdf.make_stream(xmp, Type=pikepdf.Name.Metadata, Subtype=pikepdf.Name.XML)
    profile = pdf.make_stream(SRGB, N=3)
    pdf.Root.OutputIntents = pikepdf.Array([pikepdf.Dictionary(
        Type=pikepdf.Name.OutputIntent, S=pikepdf.Name.GTS_PDFA1, OutputConditionIdentifier="sRGB IEC61966-2.1",
        DestOutputProfile=profile)])
    pdf.docinfo["/Producer"] = "LibreOffice 7.4"
    pdf.docinfo["/Creator"] = "Writer"
    pdf.docinfo["/Title"] = "Pedido de renovação"
    pdf.docinfo["/CreationDate"] = "D:20170523102606+08'00'"
    pdf.docinfo["/ModDate"] = "D:20170523102606+08'00'"
    out = io.BytesIO()
    pdf.save(out, force_version="1.4" if part == 1 else "1.7", fix_metadata_version=False,
             compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return out.getvalue()


def xmp_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


@pytest.mark.parametrize("level", [PadesLevel.B_B, PadesLevel.B_LT], ids=lambda l: l.value)
@pytest.mark.parametrize("part, conformance", [(1, "A"), (2, "B")], ids=["PDF/A-1a", "PDF/A-2b"])
def test_a_signed_pdfa_file_keeps_what_pdfa_requires(pades_world, part, conformance, level):
    service = pades_world[0]
    signed = sign(pades_world, pdfa_pdf(part, conformance), level)
    report, = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.trusted, report.summary

    root = last_xmp(signed)
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        info = {key: str(value) for key, value in pdf.docinfo.items()}
        metadata = pdf.Root.Metadata
        assert "/Filter" not in metadata
        packet = metadata.read_bytes()
        intents = list(pdf.Root.OutputIntents)
        profile = intents[0].DestOutputProfile.read_bytes()
        intent_kind = str(intents[0].S)
        fonts = [(bytes(d.FontFile3.read_bytes()), bytes(d.CIDSet.read_bytes()) if "/CIDSet" in d else None)
                 for d in (o for o in pdf.objects if isinstance(o, pikepdf.Dictionary)
                           and o.get("/Type") == pikepdf.Name.FontDescriptor and "/FontFile3" in o)]

    # 6.7.3: Info and XMP agree.
    assert info["/Producer"] == xmp_value(root, PDF, "Producer")
    assert parse_pdf_date(info["/ModDate"]) == xmp_time(xmp_value(root, XMP, "ModifyDate"))
    assert parse_pdf_date(info["/ModDate"]) > datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    assert parse_pdf_date(info["/CreationDate"]) == xmp_time(xmp_value(root, XMP, "CreateDate"))
    assert info["/Creator"] == xmp_value(root, XMP, "CreatorTool") == "Writer"
    assert info["/Title"] == xmp_value(root, DC, "title") == "Pedido de renovação"
    # 6.7.11: the identification.
    assert (xmp_value(root, PDFAID, "part"), xmp_value(root, PDFAID, "conformance")) == (str(part), conformance)
    # 6.2.2: the output intent.
    assert len(intents) == 1 and intent_kind == "/GTS_PDFA1" and profile == SRGB
    # 6.7.5: the packet header.
    header = packet[:packet.index(b"?>")]
    assert header.startswith(b"<?xpacket begin=") and b"bytes=" not in header and b"encoding=" not in header
    # 6.3.5: the stamp's font lists its CIDs.
    assert fonts, "the stamp's CIDFont is embedded"
    for program, cids in fonts:
        font_set = CFFFontSet()
        font_set.decompile(io.BytesIO(program), None)
        held = [0 if name == ".notdef" else int(name[3:]) for name in font_set[0].charset]
        assert cids == cid_set(held), "the /CIDSet lists exactly the CIDs of the font program"
        assert set_bits(cids) == set(held)


@pytest.fixture(scope="module")
def lagging_clock():
    """Five minutes behind the real time: what a service records comes from its clock, never from
    the real one, and certificates and time-stamps made by it stay valid against the real clock."""
    return ManualClock(SystemClock().now().replace(microsecond=0) - datetime.timedelta(minutes=5))


@pytest.fixture(scope="module")
def lagging_world(config, tmp_path_factory, lagging_clock):
    service = service_with_ca(config, tmp_path_factory.mktemp("lagging") / "signserver.db", lagging_clock)
    created, seed = enrol(service, holder_name="Weng Sam LUZIA KUAN", kind=AccountKind.CORPORATE,
                          organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    app, _ = service.applications.create("pdf-app", otp_required=False)
    return service, app, created, seed


def revisions(data: bytes) -> list[bytes]:
    """The file as it was after each of its revisions (each ends with its end-of-file marker)."""
    return [data[:marker.end()] for marker in re.finditer(rb"%%EOF\r?\n?", data)]


@pytest.mark.parametrize("level", [PadesLevel.B_LT, PadesLevel.B_LTA], ids=lambda l: l.value)
def test_every_revision_signing_appends_records_the_signing_moment_alike_in_info_and_xmp(
        lagging_world, lagging_clock, level):
    # The validation data and the document time-stamp come in revisions of their own after the
    # signature's: each changes the document, and each must keep Info and XMP equal (6.7.3).
    service = lagging_world[0]
    signed = sign(lagging_world, pdfa_pdf(2, "B"), level)
    report, = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.level == level.value, report.summary

    appended = revisions(signed)[1:]
    assert len(appended) >= 2, "the signature's revision and the validation data's"
    for number, revision in enumerate(appended, start=2):
        with pikepdf.open(io.BytesIO(revision)) as pdf:
            info_time = parse_pdf_date(str(pdf.docinfo["/ModDate"]))
            packet = pdf.Root.Metadata.read_bytes()
        root = etree.fromstring(packet, etree.XMLParser(resolve_entities=False, no_network=True))
        assert (info_time, xmp_time(xmp_value(root, XMP, "ModifyDate"))) == (lagging_clock.now(),) * 2, \
            f"revision {number}"
    # The signature says it was made then too (its signing-time attribute), as its stamp does.
    signature, = PdfFileReader(io.BytesIO(signed)).embedded_regular_signatures
    assert signature.self_reported_timestamp == lagging_clock.now()


def set_bits(stream: bytes) -> set[int]:
    return {index * 8 + bit for index, byte in enumerate(stream) for bit in range(8) if byte & (0x80 >> bit)}


def test_cid_set_bits_run_from_the_high_order_bit_of_the_first_byte():
    assert cid_set([0]) == b"\x80"
    assert cid_set([0, 7, 8, 17]) == bytes([0b10000001, 0b10000000, 0b01000000])
    assert set_bits(cid_set([3, 1000])) == {3, 1000}
