"""Damaged PDFs never make the server fail: real documents (the example, several pages, a signed
one, one with an object stream and a cross-reference stream) are mutated the ways files get
damaged or forged (flipped bytes, truncation, splices of another document, duplicated
cross-reference sections and trailers, numbers changed in the body and in object streams,
references redirected, keywords dropped, deep nesting), half of them then given a fresh
cross-reference section so that the reader gets past it into the damaged objects, and sent through
SignPdf, PrepareSignature and VerifyPdf. No call may end INTERNAL or UNKNOWN, and the server must still answer Health."""

from __future__ import annotations

import collections
import io
import re
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.writer import PdfFileWriter

from signserver.v1 import document_pb2
from tests.conftest import PASSWORD
from tests.fuzz.conftest import SERVER_FAULTS, FuzzWorld, fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
# About 60 s on a loaded 2-core machine: a document that survives its mutation costs a signature
# (~150 ms) and a verification.
EXAMPLES = 200
CALL_SECONDS = 60
CHUNK = 256 * 1024


def object_stream_pdf(pages: int = 3) -> bytes:
    """A PDF whose page tree, pages and font sit in an uncompressed object stream, indexed by a
    cross-reference stream: where a number changed inside the object stream lands."""
    writer = PdfFileWriter(stream_xrefs=True, init_page_tree=False)
    objects = writer.prepare_object_stream(compress=False)
    font = writer.add_object(generic.DictionaryObject({
        pdf_name("/Type"): pdf_name("/Font"), pdf_name("/Subtype"): pdf_name("/Type1"),
        pdf_name("/BaseFont"): pdf_name("/Helvetica")}), obj_stream=objects)
    tree = writer.allocate_placeholder()
    kids = generic.ArrayObject()
    for number in range(pages):
        contents = writer.add_object(generic.StreamObject(
            stream_data=f"BT /F1 12 Tf 72 770 Td (Page {number + 1} of {pages}) Tj ET".encode()))
        kids.append(writer.add_object(generic.DictionaryObject({
            pdf_name("/Type"): pdf_name("/Page"), pdf_name("/Parent"): tree,
            pdf_name("/MediaBox"): generic.ArrayObject([generic.NumberObject(v) for v in (0, 0, 595, 842)]),
            pdf_name("/Contents"): contents,
            pdf_name("/Resources"): generic.DictionaryObject({pdf_name("/Font"): generic.DictionaryObject(
                {pdf_name("/F1"): font})})}), obj_stream=objects))
    writer.add_object(generic.DictionaryObject({
        pdf_name("/Type"): pdf_name("/Pages"), pdf_name("/Kids"): kids,
        pdf_name("/Count"): generic.NumberObject(pages)}), obj_stream=objects, idnum=tree.idnum)
    writer.root[pdf_name("/Pages")] = tree
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def corpus(fuzz_world) -> dict[str, bytes]:
    return {"example": (ROOT / "examples" / "sample.pdf").read_bytes(), "pages": fuzz_world.documents["pages"],
            "signed": fuzz_world.documents["signed"], "object stream": object_stream_pdf()}


# --- mutations: each takes the draw function, the document and the corpus ---------------------

NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")
REFERENCE = re.compile(rb"\d+ \d+ R")
EDGE_NUMBERS = [b"0", b"-1", b"1", b"2147483648", b"4294967296", b"9223372036854775808",
                b"99999999999999999999999999", b"1e308", b"-0", b"3.4e38", b"00000000001", b".", b"-"]
KEYWORDS = [b"endobj", b" obj", b"stream", b"endstream", b">>", b"<<", b"]", b" R", b"trailer", b"xref",
            b"startxref", b"%%EOF", b"/Type", b"/Kids", b"/Count"]


def _position(draw, data: bytearray) -> int:
    # Anywhere in the file alike: Hypothesis's own integers favour the ends, and the first bytes
    # (the header) only make the document unreadable at once.
    return draw(st.randoms(use_true_random=True)).randrange(max(len(data), 1))


def flip_bytes(draw, data, corpus):
    for _ in range(draw(st.integers(1, 8))):
        if data:
            data[_position(draw, data)] ^= draw(st.integers(1, 255))
    return data


def truncate(draw, data, corpus):
    return data[:_position(draw, data)]


def splice(draw, data, corpus):
    other = corpus[draw(st.sampled_from(sorted(corpus)))]
    start = draw(st.integers(0, len(other) - 1))
    piece = other[start:start + draw(st.integers(1, 4096))]
    at = _position(draw, data)
    end = at + draw(st.integers(0, 4096))
    return data[:at] + piece + data[end:]


def duplicate_tail(draw, data, corpus):
    """The cross-reference section and trailer (or the whole last update) once more, as a broken
    incremental update leaves them."""
    marker = draw(st.sampled_from([b"xref", b"trailer", b"startxref", b"endobj"]))
    at = data.rfind(marker)
    if at < 0:
        return data
    tail = data[at:]
    return data + b"\n" + tail if draw(st.booleans()) else data[:at] + tail + tail


def alter_number(draw, data, corpus):
    numbers = list(NUMBER.finditer(data))
    if not numbers:
        return data
    found = numbers[draw(st.integers(0, len(numbers) - 1))]
    value = draw(st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(-(2**70), 2**70).map(lambda v: str(v).encode())))
    return data[:found.start()] + value + data[found.end():]


def redirect_reference(draw, data, corpus):
    """A reference pointed elsewhere: at the catalogue, the page tree, itself, nothing."""
    references = list(REFERENCE.finditer(data))
    if not references:
        return data
    found = references[draw(st.integers(0, len(references) - 1))]
    target = draw(st.sampled_from([b"1 0 R", b"2 0 R", b"3 0 R", b"0 0 R", b"999999 0 R", b"2 65535 R"]))
    return data[:found.start()] + target + data[found.end():]


def drop_keyword(draw, data, corpus):
    keyword = draw(st.sampled_from(KEYWORDS))
    places = [m.start() for m in re.finditer(re.escape(keyword), data)]
    if not places:
        return data
    at = places[draw(st.integers(0, len(places) - 1))]
    return data[:at] + data[at + len(keyword):]


def nest_deeply(draw, data, corpus):
    """Arrays or dictionaries nested far past any real document, balanced or not, in a dictionary."""
    depth = draw(st.sampled_from([50, 1_000, 100_000]))
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b"<< /A ", b">>")]))
    nested = opening * depth + (closing * depth if draw(st.booleans()) else b"")
    places = [m.end() for m in re.finditer(rb"<<", data)] or [0]
    at = places[draw(st.integers(0, len(places) - 1))]
    return data[:at] + b" /Deep " + nested + b" " + data[at:]


MUTATIONS = [flip_bytes, truncate, splice, duplicate_tail, alter_number, redirect_reference, drop_keyword,
             nest_deeply]


OBJECT = re.compile(rb"(?m)^(\d+) (\d+) obj\b")
ROOT_ENTRY = re.compile(rb"/Root\s+(\d+\s+\d+\s+R)")


def with_fresh_xref(data: bytes) -> bytes:
    """A cross-reference section appended that indexes the objects where they now are, as a
    careful forger would write it: the reader then gets past the table into the damaged objects."""
    offsets = {int(m.group(1)): (m.start(), int(m.group(2))) for m in OBJECT.finditer(data)}
    roots = ROOT_ENTRY.findall(data)
    if not offsets or not roots or max(offsets) > 100_000:
        return data
    size = max(offsets) + 1
    table = [b"xref\n0 %d\n0000000000 65535 f \n" % size]
    for number in range(1, size):
        offset, generation = offsets.get(number, (0, 0))
        table.append(b"%010d %05d %s \n" % (offset, generation, b"n" if number in offsets else b"f"))
    start = len(data) + 1
    return data + b"\n" + b"".join(table) + \
        b"trailer\n<< /Size %d /Root %s >>\nstartxref\n%d\n%%%%EOF\n" % (size, roots[-1], start)


@st.composite
def damaged(draw, corpus: dict[str, bytes]) -> bytes:
    data = bytearray(corpus[draw(st.sampled_from(sorted(corpus)), label="document")])
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(MUTATIONS), label="mutation")
        data = bytearray(mutation(draw, data, corpus))
    return with_fresh_xref(bytes(data)) if draw(st.booleans(), label="fresh xref") else bytes(data)


STAMPS = [{}, {"page": 1}, {"invisible": True}, {"field_name": "Signature1"}, {"page": -2, "caption": "數碼簽署"}]


# --- the three calls that read a document ------------------------------------------------------

def _header(world: FuzzWorld, stamp: dict) -> document_pb2.SignPdfHeader:
    account, credential_id = world.document_signer
    return document_pb2.SignPdfHeader(account=account, password=PASSWORD, credential_id=credential_id,
                                      level="B-B", stamp=document_pb2.Stamp(**stamp))


def _chunks(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]


def sign_pdf(world, stub, metadata, data, stamp):
    requests = [document_pb2.SignPdfRequest(header=_header(world, stamp))]
    requests += [document_pb2.SignPdfRequest(chunk=c) for c in _chunks(data)]
    return list(stub.SignPdf(iter(requests), metadata=metadata, timeout=CALL_SECONDS))


def prepare_signature(world, stub, metadata, data, stamp):
    requests = [document_pb2.PrepareSignatureRequest(header=_header(world, stamp))]
    requests += [document_pb2.PrepareSignatureRequest(chunk=c) for c in _chunks(data)]
    return stub.PrepareSignature(iter(requests), metadata=metadata, timeout=CALL_SECONDS)


def verify_pdf(world, stub, metadata, data, stamp):
    requests = [document_pb2.VerifyPdfRequest(chunk=c) for c in _chunks(data)]
    return stub.VerifyPdf(iter(requests), metadata=metadata, timeout=CALL_SECONDS)


CALLS = [sign_pdf, prepare_signature, verify_pdf]


def status_of(call, *arguments) -> grpc.StatusCode:
    try:
        call(*arguments)
    except grpc.RpcError as refused:
        return refused.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def documents(fuzz_world):
    from signserver.v1 import document_pb2_grpc

    caller = next(c for c in fuzz_world.callers if c.name == "plain-app")
    return document_pb2_grpc.DocumentServiceStub(caller.channel), caller.metadata


def test_the_undamaged_documents_are_signed_and_verified(fuzz_world, documents, corpus):
    """The harness itself: every document of the corpus, as it is, goes through all three calls."""
    stub, metadata = documents
    for name, data in corpus.items():
        for call in CALLS:
            assert status_of(call, fuzz_world, stub, metadata, data, {"page": 1}) is grpc.StatusCode.OK, \
                (name, call.__name__)


def test_damaged_documents_never_fail_the_server(fuzz_world, documents, corpus):
    stub, metadata = documents
    codes = collections.Counter()

    @fuzz_settings(EXAMPLES)
    @given(data=damaged(corpus), stamp=st.sampled_from(STAMPS))
    def run(data, stamp):
        for call in CALLS:
            code = status_of(call, fuzz_world, stub, metadata, data, stamp)
            assert code not in SERVER_FAULTS and code is not grpc.StatusCode.DEADLINE_EXCEEDED, \
                f"{call.__name__} ended {code.name}"
            codes[call.__name__, code.name] += 1
        fuzz_world.assert_serving()

    run()
    # Some documents survived their damage and were signed, others were refused: both paths ran.
    assert ("sign_pdf", "OK") in codes and ("sign_pdf", "INVALID_ARGUMENT") in codes, codes
