"""Finding the last page from the end of the page tree gives what pyHanko's walk from the front
gives, on nested trees with empty branches and inherited resources; the stamp lands there."""

from __future__ import annotations

import io

import pytest
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.pades.document import open_for_signing
from signserver.pades.stamp import StampOptions
from tests.pades.test_signing import sign


def pdf_with_page_tree() -> bytes:
    """Six pages in a nested tree whose last branch is empty, with resources on an inner node:
    root -> [page 0, node A -> [page 1, node B -> [page 2, page 3]], page 4, node C -> [page 5],
    node D -> []]."""
    objects = {
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [3 0 R 4 0 R 7 0 R 8 0 R 10 0 R] /Count 6 >>",
        4: "<< /Type /Pages /Parent 2 0 R /Kids [5 0 R 6 0 R] /Count 3 /Resources << /ProcSet [/PDF] >> >>",
        6: "<< /Type /Pages /Parent 4 0 R /Kids [11 0 R 12 0 R] /Count 2 >>",
        8: "<< /Type /Pages /Parent 2 0 R /Kids [9 0 R] /Count 1 /Resources << /ProcSet [/PDF /Text] >> >>",
        10: "<< /Type /Pages /Parent 2 0 R /Kids [] /Count 0 >>",
    }
    for number, parent in ((3, 2), (5, 4), (11, 6), (12, 6), (7, 2), (9, 8)):
        objects[number] = f"<< /Type /Page /Parent {parent} 0 R /MediaBox [0 0 595 842] >>"
    body, offsets = bytearray(b"%PDF-1.7\n"), {}
    for number in sorted(objects):
        offsets[number] = len(body)
        body += f"{number} 0 obj\n{objects[number]}\nendobj\n".encode()
    xref = len(body)
    body += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    body += b"".join(f"{offsets[n]:010d} 00000 n \n".encode() for n in sorted(objects))
    body += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(body)


@pytest.mark.parametrize("page", [-1, 5])
@pytest.mark.parametrize("retrieve_parent", [False, True])
def test_the_last_page_is_found_as_pyhanko_finds_it(page, retrieve_parent):
    ours = open_for_signing(io.BytesIO(pdf_with_page_tree()))._walk_page_tree(page, retrieve_parent)
    theirs = IncrementalPdfFileWriter(io.BytesIO(pdf_with_page_tree()))._walk_page_tree(page, retrieve_parent)
    assert len(ours) == len(theirs)
    assert ours[0].reference == theirs[0].reference  # the page (or its parent node)
    assert ours[1:-1] == theirs[1:-1]  # the page's index in its parent
    assert ours[-1].get_object() == theirs[-1].get_object()  # the resources it inherits


def test_other_pages_are_found_by_pyhankos_walk():
    for page in range(5):
        ours = open_for_signing(io.BytesIO(pdf_with_page_tree())).find_page_for_modification(page)
        theirs = IncrementalPdfFileWriter(io.BytesIO(pdf_with_page_tree())).find_page_for_modification(page)
        assert ours[0].reference == theirs[0].reference


def test_the_default_stamp_lands_on_the_last_page_of_a_nested_tree(pades_world):
    signed = PdfFileReader(io.BytesIO(sign(pades_world, pdf_with_page_tree(), stamp=StampOptions())))
    last_page, _ = signed.find_page_for_modification(-1)
    widgets = [a.get_object() for a in last_page.get_object().get("/Annots", [])]
    assert [w["/FT"] for w in widgets] == ["/Sig"]
    assert [float(v) for v in widgets[0]["/Rect"]] != [0.0, 0.0, 0.0, 0.0]  # visible
