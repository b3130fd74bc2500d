"""What signing records in a document's metadata: one producer and one modification time, written
alike to the Info dictionary and to the XMP packet, and nothing else of either touched.

PDF/A (ISO 19005-1 6.7.3, 19005-2 6.6.2.3) wants each Info entry equal to its XMP counterpart.
pyHanko, left to itself, appends its name to the Info /Producer but writes its name alone to
the XMP pdf:Producer, takes the time twice, and rewrites the whole packet through its own model;
so every revision signing appends (the signature's, and the validation data's of B-LT and B-LTA)
is written by signserver.pades.writer.SigningWriter, which records here. The producer recorded is
pyHanko's name; the producer of the original stays in the revisions before the signature.

An XMP packet that is not well-formed XML (Ghostscript 10.00 writes an attribute value without
quotes) is repaired as far as the XML parser's recovery goes, and rebuilt from nothing if that
finds no packet: the revisions pyHanko appends, and validators that compare revisions, read it.
Entity references (a packet with a DTD of its own) are dropped, never expanded: written back
without their DTD they would not be XML. A packet that is well-formed is only updated. In a
document that is already signed a malformed packet is refused instead: replacing it would make
the earlier signatures' later changes suspicious (pyHanko's difference analysis wants both the old
and the new packet well-formed).
"""

from __future__ import annotations

import datetime
import logging

from lxml import etree
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.metadata.model import VENDOR

from signserver.errors import InvalidArgument

log = logging.getLogger(__name__)

PRODUCER = VENDOR

_X = "adobe:ns:meta/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_PDF = "http://ns.adobe.com/pdf/1.3/"
_XMP = "http://ns.adobe.com/xap/1.0/"
_PACKET_START = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'.encode("utf-8")
_PACKET_END = b'\n<?xpacket end="w"?>'


def record_signing(writer, moment: datetime.datetime) -> None:
    """Record in ``writer`` (a pyHanko writer about to write its revision) that the document was
    changed at ``moment`` by :data:`PRODUCER`, in the Info dictionary and the XMP packet alike.

    Raises: PdfError (from pyHanko, reading a damaged metadata stream).
    """
    moment = moment.replace(microsecond=0)
    xmp_wanted = writer.output_version >= (2, 0) or "/Metadata" in writer.root
    info = writer._info  # pyHanko keeps the trailer's /Info reference here; it has no public setter
    if info is not None:
        entries = info.get_object()
        entries[pdf_name("/Producer")] = generic.TextStringObject(PRODUCER)
        entries[pdf_name("/ModDate")] = generic.pdf_date(moment)
        writer.mark_update(info)
    elif not xmp_wanted:
        writer._info = writer.add_object(generic.DictionaryObject({
            pdf_name("/Producer"): generic.TextStringObject(PRODUCER),
            pdf_name("/ModDate"): generic.pdf_date(moment)}))
    if xmp_wanted:
        packet = updated_xmp(_current_xmp(writer), moment)
        stream = generic.StreamObject({pdf_name("/Type"): pdf_name("/Metadata"),
                                       pdf_name("/Subtype"): pdf_name("/XML")}, stream_data=packet)
        # Uncompressed: PDF/A-1 (6.7.2) wants a metadata stream without filters.
        writer.root[pdf_name("/Metadata")] = writer.add_object(stream)
        writer.update_root()


def refuse_unrepairable_metadata(writer) -> None:
    """Refuse a document that is signed already and whose XMP packet is not well-formed: signing
    must replace the packet, which would make the earlier signatures' later changes suspicious.
    Call before the signature field is added.

    Raises: InvalidArgument. PdfError (from pyHanko, reading the document).
    """
    current = _current_xmp(writer)
    if current and not well_formed(current) and any(writer.prev.embedded_signatures):
        raise InvalidArgument(
            "the document's XMP metadata is not well-formed XML and the document is signed already: "
            "repairing the metadata would make the earlier signature's later changes suspicious; have "
            "the document produced again with well-formed metadata before anyone signs it")


def _current_xmp(writer) -> bytes | None:
    try:
        stream = writer.root["/Metadata"]
    except KeyError:
        return None
    if not isinstance(stream, generic.StreamObject):
        return None
    return stream.read_data(DecodePurpose.XMP_METADATA)


def updated_xmp(packet: bytes | None, moment: datetime.datetime) -> bytes:
    """``packet`` (an XMP packet, or None) with pdf:Producer, xmp:ModifyDate and, where present,
    xmp:MetadataDate set; every other property, the PDF/A identification among them, as it was.
    A packet that is not well-formed is repaired, or rebuilt when nothing can be recovered."""
    tree = _parse(packet) if packet else None
    if tree is None:
        if packet:
            log.info("the document's XMP metadata is not readable XML; it is rebuilt")
        tree = etree.ElementTree(etree.fromstring(
            f'<x:xmpmeta xmlns:x="{_X}"><rdf:RDF xmlns:rdf="{_RDF}"/></x:xmpmeta>'.encode()))
    rdf = tree.getroot().find(f"{{{_RDF}}}RDF")
    when = moment.isoformat()
    _set_property(rdf, _PDF, "pdf", "Producer", PRODUCER)
    _set_property(rdf, _XMP, "xmp", "ModifyDate", when)
    _set_property(rdf, _XMP, "xmp", "MetadataDate", when, only_if_present=True)
    body = etree.tostring(tree.getroot(), encoding="utf-8", xml_declaration=False)
    return _PACKET_START + body + _PACKET_END


def _parser(recover: bool) -> etree.XMLParser:
    # No entity is expanded, no DTD loaded and nothing fetched: the packet is the caller's data.
    return etree.XMLParser(recover=recover, resolve_entities=False, no_network=True, load_dtd=False,
                           remove_blank_text=False)


def well_formed(packet: bytes) -> bool:
    """Whether ``packet`` parses as XML without recovery and holds no entity reference."""
    try:
        root = etree.fromstring(packet, _parser(recover=False))
    except etree.LxmlError:
        return False
    return root is not None and next(root.iter(etree.Entity), None) is None


def _parse(packet: bytes) -> etree._ElementTree | None:
    """The packet as a tree rooted at x:xmpmeta (x:xapmeta of older writers, or a bare rdf:RDF,
    wrapped in one), or None. Parsed strictly when it is well-formed (recovery would drop what lies
    beyond the parser's limits), with recovery otherwise; entity references are removed."""
    try:
        root = etree.fromstring(packet, _parser(recover=False))
    except etree.LxmlError:
        try:
            root = etree.fromstring(packet, _parser(recover=True))
        except etree.LxmlError:
            return None
    if root is None:
        return None
    for entity in list(root.iter(etree.Entity)):
        _remove_keeping_tail(entity)
    if root.tag == f"{{{_X}}}xapmeta":
        root.tag = f"{{{_X}}}xmpmeta"
    if root.tag not in (f"{{{_X}}}xmpmeta", f"{{{_RDF}}}RDF"):
        nested = root.find(f".//{{{_RDF}}}RDF")  # under a wrapper of some other writer's
        if nested is not None:
            root = nested
    if root.tag == f"{{{_RDF}}}RDF":
        wrapper = etree.Element(f"{{{_X}}}xmpmeta", nsmap={"x": _X})
        wrapper.append(root)
        root = wrapper
    rdf = root.find(f"{{{_RDF}}}RDF")
    if root.tag != f"{{{_X}}}xmpmeta" or rdf is None:
        return None
    for node in (root, rdf):
        # Recovery leaves the rest of a broken tag as text between the descriptions.
        node.text = _blank(node.text)
        for child in node:
            child.tail = _blank(child.tail)
    return etree.ElementTree(root)


def _remove_keeping_tail(node: etree._Element) -> None:
    parent = node.getparent()
    if node.tail:
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)


def _blank(text: str | None) -> str | None:
    return text if text is None or not text.strip() else "\n"


def _set_property(rdf: etree._Element, namespace: str, prefix: str, name: str, value: str,
                  only_if_present: bool = False) -> None:
    """Set a simple property wherever the packet holds it, as an attribute or an element of any
    rdf:Description; add it in a description of its own if it is nowhere."""
    tag = f"{{{namespace}}}{name}"
    found = False
    descriptions = rdf.findall(f"{{{_RDF}}}Description")
    for description in descriptions:
        if tag in description.attrib:
            description.set(tag, value)
            found = True
        for element in description.findall(tag):
            for child in list(element):
                element.remove(child)
            element.text = value
            found = True
    if found or only_if_present:
        return
    about = descriptions[0].get(f"{{{_RDF}}}about", "") if descriptions else ""
    description = etree.SubElement(rdf, f"{{{_RDF}}}Description", nsmap={prefix: namespace})
    description.set(f"{{{_RDF}}}about", about)  # PDF/A: every description is about the same thing
    etree.SubElement(description, tag).text = value
