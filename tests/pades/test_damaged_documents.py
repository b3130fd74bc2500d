"""Damaged documents (a page tree that loops, one nested past any real document, objects nested
100,000 deep, a stream filter no reader knows, a cross-reference stream declaring more objects
than the document could hold) are the caller's fault: INVALID_ARGUMENT that says the document is damaged, never
INTERNAL, from every call that reads a document. And a day count too large for a date is refused."""

from __future__ import annotations

import io

import grpc
import pytest
from pyhanko.pdf_utils.misc import PdfReadError

from signserver.errors import InvalidArgument
from signserver.grpc_api.certificate_servicer import MAX_EXPIRY_WINDOW_DAYS
from signserver.pades.document import open_for_signing
from signserver.pades.sample import sample_pdf
from signserver.pades.verification import TrustMaterial, VerificationLimits, verify_stream
from signserver.v1 import certificate_pb2, certificate_pb2_grpc, document_pb2, document_pb2_grpc
from tests.ca.conftest import StampedStub, ca_clock, ca_service  # noqa: F401 (fixtures)
from tests.ca.test_certificate_service import channel_for, client_pair, served  # noqa: F401 (a fixture)
from tests.conftest import PASSWORD
from tests.fuzz.test_pdf_mutations import object_stream_pdf
from tests.grpc_api.conftest import ServerThread


def build_pdf(objects: dict[int, str | bytes], root: int = 1) -> bytes:
    """A classic PDF (cross-reference table, no streams needed) with these numbered objects."""
    body, offsets = bytearray(b"%PDF-1.7\n"), {}
    for number in sorted(objects):
        value = objects[number]
        offsets[number] = len(body)
        body += f"{number} 0 obj\n".encode() + (value.encode() if isinstance(value, str) else value) + b"\nendobj\n"
    size = max(objects) + 1
    xref = len(body)
    body += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    body += b"".join((f"{offsets[n]:010d} 00000 n \n" if n in offsets else "0000000000 00000 f \n").encode()
                     for n in range(1, size))
    body += f"trailer\n<< /Size {size} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(body)


PAGE = "<< /Type /Page /Parent {parent} 0 R /MediaBox [0 0 595 842] >>"


def looping_page_tree() -> bytes:
    """The root's kid is a second node whose kid is the root again: root -> [node -> [root]]."""
    return build_pdf({
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: "<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
    })


def loop_behind_the_first_page() -> bytes:
    """root -> [page, node -> [root]]: the walk to the last page, from the end, meets the loop."""
    return build_pdf({
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
        3: PAGE.format(parent=2),
        4: "<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
    })


def loop_before_the_last_page() -> bytes:
    """root -> [node -> [root], page]: a walk from the front (any page but the last) meets the loop."""
    return build_pdf({
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [4 0 R 3 0 R] /Count 2 >>",
        3: PAGE.format(parent=2),
        4: "<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
    })


def deep_page_tree(levels: int = 2000) -> bytes:
    """``levels`` page tree nodes, each the only kid of the one above, with one page at the bottom."""
    objects = {1: "<< /Type /Catalog /Pages 2 0 R >>"}
    for level in range(levels):
        number = 2 + level
        parent = f"/Parent {number - 1} 0 R " if level else ""
        objects[number] = f"<< /Type /Pages {parent}/Kids [{number + 1} 0 R] /Count 1 >>"
    objects[2 + levels] = PAGE.format(parent=1 + levels)
    return build_pdf(objects)


def nested_arrays(depth: int = 100_000) -> bytes:
    """One page whose resources hold ``depth`` arrays, each inside the one before."""
    nested = b"[" * depth + b"]" * depth
    return build_pdf({
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Deep " + nested + b" >> >>",
    })


def nested_arrays_in_contents(depth: int = 100_000) -> bytes:
    """The same nesting in the page's /Contents entry."""
    nested = b"[" * depth + b"]" * depth
    return build_pdf({
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents " + nested + b" >>",
    })


def negative_startxref() -> bytes:
    """A cross-reference table said to start before the file does (pyHanko seeks there)."""
    whole = build_pdf({1: "<< /Type /Catalog /Pages 2 0 R >>", 2: "<< /Type /Pages /Kids [] /Count 0 >>"})
    head, _, _ = whole.rpartition(b"startxref\n")
    return head + b"startxref\n-5\n%%EOF\n"


def unknown_stream_filter() -> bytes:
    """A cross-reference stream (and every other stream) compressed with a filter no reader knows."""
    return object_stream_pdf().replace(b"/FlateDecode", b"/FlateDecoee")


def xref_stream_declaring(entries: int, widths: str = "1 8 2") -> bytes:
    """A document of 1.5 kB whose cross-reference stream declares ``entries`` objects, its entries
    ``widths`` bytes wide. A lenient reader takes the entries past the stream's data as default
    ones: 300 million of them held pyHanko's reader 28 s of CPU until it failed at 3 GB."""
    data = object_stream_pdf()
    assert data.count(b"/Index [ 0 1 1 12 ]") == 1 and data.count(b"/W [ 1 8 2 ]") == 1
    return data.replace(b"/Index [ 0 1 1 12 ]", f"/Index [ 0 1 1 {entries - 1} ]".encode()).replace(
        b"/W [ 1 8 2 ]", f"/W [ {widths} ]".encode())


DAMAGED = {
    "300 million objects declared by 1.5 kB": lambda: xref_stream_declaring(300_000_000),
    "300 million objects of no bytes": lambda: xref_stream_declaring(300_000_000, "0 0 0"),
    "page tree looping through a second node": looping_page_tree,
    "a stream filter no reader knows": unknown_stream_filter,
    "startxref before the start of the file": negative_startxref,
    "2,000-level page tree": deep_page_tree,
    "100,000 nested arrays in the resources": nested_arrays,
    "100,000 nested arrays in the contents": nested_arrays_in_contents,
}
# The page to stamp: the last one (found from the end of the tree) and the first (found from the
# front), visible and not (an invisible signature's widget goes on the first page).
STAMPS = {"last page": {}, "first page": {"page": 1}, "invisible": {"invisible": True}}
# Each damaged document with every stamp; a loop elsewhere in the tree with the stamps whose walk
# meets it (a walk that does not meet it does not look for it: that would parse every page).
CASES = [(name, make, stamp_name) for name, make in DAMAGED.items() for stamp_name in STAMPS] + [
    ("loop behind the first page", loop_behind_the_first_page, "last page"),
    ("loop before the last page", loop_before_the_last_page, "first page"),
    ("loop before the last page", loop_before_the_last_page, "invisible"),
]


@pytest.fixture(scope="module")
def documents(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("damaged-documents-app", otp_required=False)
    with ServerThread(config, service) as server, server.channel() as channel:
        yield document_pb2_grpc.DocumentServiceStub(channel), [("x-api-key", api_key)], created


def chunks(data: bytes, size: int = 256 * 1024):
    return [data[i:i + size] for i in range(0, len(data), size)]


def sign_pdf(documents, data: bytes, stamp: dict):
    stub, metadata, created = documents
    header = document_pb2.SignPdfHeader(account=created.account.username, password=PASSWORD,
                                        credential_id=created.credential.id, level="B-B",
                                        stamp=document_pb2.Stamp(**stamp))
    requests = [document_pb2.SignPdfRequest(header=header)] + [document_pb2.SignPdfRequest(chunk=c)
                                                                for c in chunks(data)]
    return list(stub.SignPdf(iter(requests), metadata=metadata, timeout=120))


def prepare_signature(documents, data: bytes, stamp: dict):
    stub, metadata, created = documents
    header = document_pb2.SignPdfHeader(credential_id=created.credential.id, level="B-B",
                                        stamp=document_pb2.Stamp(**stamp))
    requests = [document_pb2.PrepareSignatureRequest(header=header)] + [
        document_pb2.PrepareSignatureRequest(chunk=c) for c in chunks(data)]
    return stub.PrepareSignature(iter(requests), metadata=metadata, timeout=120)


def verify_pdf(documents, data: bytes):
    stub, metadata, _ = documents
    return stub.VerifyPdf(iter([document_pb2.VerifyPdfRequest(chunk=c) for c in chunks(data)]),
                          metadata=metadata, timeout=120)


def assert_refused_as_damaged(call) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "damaged" in refused.value.details()


@pytest.mark.parametrize("make,stamp", [(make, STAMPS[stamp]) for _, make, stamp in CASES],
                         ids=[f"{name}-{stamp}" for name, _, stamp in CASES])
@pytest.mark.parametrize("call", [sign_pdf, prepare_signature], ids=["SignPdf", "PrepareSignature"])
def test_a_damaged_document_is_refused_when_signing(documents, call, make, stamp):
    assert_refused_as_damaged(lambda: call(documents, make(), stamp))


@pytest.mark.parametrize("make", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_document_is_refused_by_verification(documents, make):
    assert_refused_as_damaged(lambda: verify_pdf(documents, make()))


@pytest.mark.parametrize("make,page,fragment", [
    (looping_page_tree, 0, "loops back on itself"), (looping_page_tree, -1, "loops back on itself"),
    (loop_behind_the_first_page, -1, "loops back on itself"), (loop_before_the_last_page, 0, "loops back on itself"),
    (deep_page_tree, 0, "nested deeper than 64 levels"), (deep_page_tree, -1, "nested deeper than 64 levels"),
])
def test_the_page_tree_walk_says_what_is_wrong(make, page, fragment):
    writer = open_for_signing(io.BytesIO(make()))
    with pytest.raises(PdfReadError, match=fragment):
        writer.find_page_for_modification(page)


def test_a_cross_reference_stream_within_the_bound_is_read_as_pyhanko_reads_it():
    from signserver.pades.xref_bounds import MIN_ENTRIES

    writer = open_for_signing(io.BytesIO(xref_stream_declaring(MIN_ENTRIES)))  # past its data: defaults
    assert writer.prev.xrefs.total_revisions == 1
    with pytest.raises(InvalidArgument, match=f"declare {MIN_ENTRIES + 1:,} objects, more than a document"):
        open_for_signing(io.BytesIO(xref_stream_declaring(MIN_ENTRIES + 1)))


def test_the_server_still_signs_after_damaged_documents(documents):
    for make in DAMAGED.values():
        with pytest.raises(grpc.RpcError):
            sign_pdf(documents, make(), {})
    responses = sign_pdf(documents, sample_pdf(1), {})
    assert responses[0].WhichOneof("part") == "result" and responses[0].result.size > 0


@pytest.fixture(scope="module")
def ra(served, ca_service, ca_clock):  # noqa: F811 (served is the fixture imported above)
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-damaged-documents")
    with channel_for(served, certificate, key) as channel:
        yield StampedStub(certificate_pb2_grpc.CertificateServiceStub(channel), ca_clock)


@pytest.mark.parametrize("days", [4294967295, 2**31, MAX_EXPIRY_WINDOW_DAYS + 1])
def test_an_expiry_window_beyond_any_date_is_refused(ra, days):
    with pytest.raises(grpc.RpcError) as refused:
        ra.ListCertificates(certificate_pb2.ListCertificatesRequest(expiring_within_days=days), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "expiring_within_days" in refused.value.details()


def test_the_longest_expiry_window_lists_valid_certificates(ra):
    created = ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account="ra-window-holder", holder_name="Lei Ka Io", emails=["ra-window-holder@example.mo"],
        kind="government", organisation="DSAJ", password="Ra-created-1"), timeout=60)
    issued = ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account=created.account, profile="cloud-signature-government"), timeout=60)
    listed = ra.ListCertificates(certificate_pb2.ListCertificatesRequest(
        account=created.account, expiring_within_days=MAX_EXPIRY_WINDOW_DAYS), timeout=30)
    assert [c.serial for c in listed.certificates] == [issued.serial]


class CountingReads(io.BytesIO):
    """A document source that counts the reads made of it."""

    reads = 0

    def read(self, size=-1):
        self.reads += 1
        return super().read(size)


def verify_untrusting(source) -> None:
    verify_stream(source, TrustMaterial(roots=()), VerificationLimits())


@pytest.mark.parametrize("read", [open_for_signing, verify_untrusting], ids=["signing", "verification"])
@pytest.mark.parametrize("tail", [b"", b"%%EOF" + b"x" * 2000], ids=["no-marker", "marker-far-from-the-end"])
def test_a_body_without_an_end_marker_near_its_end_is_refused_before_it_is_walked(read, tail):
    # pyHanko looks for %%EOF reading backwards a byte at a time, a line at a time: on a body
    # with no line break near its end it read the whole body so (a million reads for 1 MB, a
    # minute of a worker's CPU for the 200 MB a document may have).
    source = CountingReads(b"%PDF-1.7\n" + b"x" * 1_000_000 + tail)
    with pytest.raises(InvalidArgument, match="not a readable PDF: .*no end-of-file marker"):
        read(source)
    assert source.reads <= 2


def test_a_document_with_bytes_after_its_end_marker_still_opens():
    # Readers allow what follows %%EOF within the last 1,024 bytes (a stray line break, padding).
    assert open_for_signing(io.BytesIO(sample_pdf() + b"\r\n" + b" " * 900)).prev.root is not None
