"""One verdict per signature and per document: false when the document was changed after signing
in a way no signature allows (new page content, an annotation over the page, JavaScript), true
for untouched B-LT and B-LTA documents, whose DSS and document time-stamp updates are allowed.
Checked in process, over gRPC (VerifyPdf) and through `signserver verify-pdf`'s exit code."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.v1 import document_pb2, document_pb2_grpc
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env
from tests.grpc_api.conftest import ServerThread
from tests.pades.test_signing import sign

FULL_PAGE = generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)])
FORGED_TEXT = b"BT /F1 18 Tf 72 770 Td (The buyer pays 1,000,000 MOP.) Tj ET"


def incremental_update(signed: bytes, change) -> bytes:
    """``signed`` with one incremental update made by ``change(writer, first_page)``."""
    writer = IncrementalPdfFileWriter(io.BytesIO(signed), strict=False)
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    change(writer, page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def replace_page_content(writer, page) -> None:
    page["/Contents"] = writer.add_object(generic.StreamObject(stream_data=FORGED_TEXT))
    writer.update_container(page)


def overlay_full_page_annotation(writer, page) -> None:
    """A white square with new text over the whole page: what a reader sees is all forged."""
    appearance = generic.StreamObject(
        {generic.NameObject("/Type"): generic.NameObject("/XObject"),
         generic.NameObject("/Subtype"): generic.NameObject("/Form"),
         generic.NameObject("/BBox"): FULL_PAGE,
         generic.NameObject("/Resources"): page["/Resources"]},
        stream_data=b"1 g 0 0 595 842 re f 0 g " + FORGED_TEXT)
    annotation = writer.add_object(generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Annot"),
        generic.NameObject("/Subtype"): generic.NameObject("/Square"),
        generic.NameObject("/Rect"): FULL_PAGE,
        generic.NameObject("/F"): generic.NumberObject(4),
        generic.NameObject("/AP"): generic.DictionaryObject({generic.NameObject("/N"): writer.add_object(appearance)}),
    }))
    annotations = page.get("/Annots", generic.ArrayObject())
    annotations = annotations.get_object() if isinstance(annotations, generic.IndirectObject) else annotations
    annotations.append(annotation)
    page["/Annots"] = annotations
    writer.update_container(page)


def add_document_javascript(writer, page) -> None:
    action = writer.add_object(generic.DictionaryObject({
        generic.NameObject("/S"): generic.NameObject("/JavaScript"),
        generic.NameObject("/JS"): generic.TextStringObject("app.alert('changed after signing');"),
    }))
    writer.root["/Names"] = generic.DictionaryObject({
        generic.NameObject("/JavaScript"): generic.DictionaryObject({
            generic.NameObject("/Names"): generic.ArrayObject([generic.TextStringObject("run"), action])})})
    writer.update_root()


TAMPERING = {"page content replaced": replace_page_content,
             "full-page annotation": overlay_full_page_annotation,
             "document JavaScript": add_document_javascript}


@pytest.fixture(scope="module")
def b_lt(pades_world) -> bytes:
    return sign(pades_world, sample_pdf(1), PadesLevel.B_LT)


@pytest.fixture(scope="module")
def b_lta(pades_world) -> bytes:
    return sign(pades_world, sample_pdf(1), PadesLevel.B_LTA)


@pytest.fixture(scope="module")
def tampered(b_lt) -> dict[str, bytes]:
    return {name: incremental_update(b_lt, change) for name, change in TAMPERING.items()}


@pytest.fixture(scope="module")
def api(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("verdict-app", otp_required=False)
    with ServerThread(config, service) as server, server.channel() as channel:
        yield document_pb2_grpc.DocumentServiceStub(channel), [("x-api-key", api_key)]


def verify_over_grpc(api, data: bytes) -> document_pb2.VerifyPdfResponse:
    stub, metadata = api
    return stub.VerifyPdf(iter([document_pb2.VerifyPdfRequest(chunk=data)]), metadata=metadata, timeout=120)


@pytest.mark.parametrize("level", ["B-LT", "B-LTA"])
def test_untouched_long_term_documents_hold(pades_world, b_lt, b_lta, level):
    signed = b_lt if level == "B-LT" else b_lta
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(signed))
    assert verdict.verdict, verdict.reason
    [report] = verdict.signatures
    assert report.level == level and report.verdict
    # The DSS (and the document time-stamp) came after the signature, as allowed updates.
    assert report.modified_after_signing and report.modification_level == "lta updates"
    assert "allowed updates" in report.reason


@pytest.mark.parametrize("name", TAMPERING)
def test_changes_after_signing_make_the_verdict_false(pades_world, tampered, name):
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(tampered[name]))
    [report] = verdict.signatures
    # The cryptography still holds for the signed bytes: only the verdict tells the truth.
    assert report.intact and report.valid and report.trusted
    assert not report.verdict and not report.modification_allowed and report.modification_level == "other"
    assert not verdict.verdict
    assert "changed after signing" in verdict.reason and report.field in verdict.reason


@pytest.mark.parametrize("name", TAMPERING)
def test_verify_pdf_over_grpc_gives_the_verdict(api, tampered, name):
    response = verify_over_grpc(api, tampered[name])
    assert not response.verdict and "changed after signing" in response.reason
    assert not response.signatures[0].verdict and response.signatures[0].reason


def test_verify_pdf_over_grpc_accepts_b_lta(api, b_lta):
    response = verify_over_grpc(api, b_lta)
    assert response.verdict, response.reason
    assert response.signatures[0].verdict and response.signatures[0].modification_level == "lta updates"


def test_a_second_signature_after_a_document_time_stamp_is_allowed(pades_world, b_lta):
    twice = sign(pades_world, b_lta, PadesLevel.B_LTA, StampOptions(box=(300, 40, 560, 110)))
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(twice))
    assert verdict.verdict, verdict.reason
    first, second = verdict.signatures
    assert first.verdict and first.modification_level == "form filling" and second.verdict
    assert "all 2 signatures hold" in verdict.reason


def test_changes_after_a_document_time_stamp_make_the_verdict_false(pades_world, b_lta):
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(incremental_update(b_lta, replace_page_content)))
    assert not verdict.verdict and not verdict.signatures[0].verdict


def test_a_document_without_signatures_is_not_valid(pades_world):
    verdict = pades_world[0].pades.verify_pdf(io.BytesIO(sample_pdf(1)))
    assert not verdict.verdict and verdict.signatures == () and "no signatures" in verdict.reason


@pytest.fixture(scope="module")
def cli(pades_world, state_dir, tmp_path_factory):
    service = pades_world[0]
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=service.database.url)
    directory = tmp_path_factory.mktemp("verdict-cli")

    def verify(data: bytes, *options: str) -> subprocess.CompletedProcess:
        path = directory / "document.pdf"
        path.write_bytes(data)
        return cli_forkserver.run([str(SIGNSERVER), "verify-pdf", str(path), *options], env=env, capture_output=True,
                                  text=True, timeout=120)
    return verify


def test_cli_exits_non_zero_on_any_tampering(cli, tampered):
    for name, data in tampered.items():
        table = cli(data)
        assert table.returncode == 1, (name, table.stdout, table.stderr)
        assert "document: NOT VALID" in table.stdout and "changed after signing" in table.stdout, table.stdout
    as_json = cli(tampered["document JavaScript"], "--json")
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["verdict"] is False and "changed after signing" in result["reason"]
    assert result["signatures"][0]["verdict"] is False and result["signatures"][0]["trusted"] is True


def test_cli_exits_zero_on_an_untouched_b_lt(cli, b_lt):
    table = cli(b_lt)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "document: VALID" in table.stdout
    result = json.loads(cli(b_lt, "--json").stdout)
    assert result["verdict"] is True and result["signatures"][0]["verdict"] is True
