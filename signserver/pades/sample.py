"""A plain multi-page PDF, for the demonstration and the benchmarks (no third-party writer needed)."""

from __future__ import annotations

import os
import re


def write_large_pdf(path, megabytes: int) -> None:
    """A one-page PDF of about ``megabytes`` MB (an attached file of random bytes), written in
    pieces so that it never sits whole in memory."""
    head = sample_pdf(1)
    body_end = head.rindex(b"xref")
    objects = head[:body_end]
    count = int(head[head.index(b"/Size ") + 6:].split(b" ")[0].split(b">")[0]) - 1
    size = megabytes * 1024 * 1024
    number = count + 1
    with open(path, "wb") as out:
        out.write(objects)
        offset = len(objects)
        out.write(f"{number} 0 obj\n<< /Type /EmbeddedFile /Length {size} >>\nstream\n".encode())
        for _ in range(megabytes):
            out.write(os.urandom(1024 * 1024))
        out.write(b"\nendstream\nendobj\n")
        xref = out.tell()
        offsets = _offsets(objects) + [offset]
        out.write(f"xref\n0 {number + 1}\n0000000000 65535 f \n".encode())
        out.write(b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets))
        out.write(f"trailer\n<< /Size {number + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())


def _offsets(body: bytes) -> list[int]:
    return [m.start() for m in re.finditer(rb"(?m)^\d+ 0 obj\n", body)]


def sample_pdf(pages: int = 1, title: str = "signserver sample document") -> bytes:
    """A valid PDF with ``pages`` A4 pages of Helvetica text."""
    objects: list[bytes] = []
    kids = []
    font_ref = 3 + 2 * pages
    for number in range(pages):
        page_id, content_id = 3 + 2 * number, 4 + 2 * number
        kids.append(f"{page_id} 0 R")
        lines = [f"BT /F1 18 Tf 72 770 Td ({title}) Tj ET",
                 f"BT /F1 11 Tf 72 740 Td (Page {number + 1} of {pages}.) Tj ET"]
        lines += [f"BT /F1 10 Tf 72 {700 - 14 * i} Td (Line {i + 1}: the terms this document records.) Tj ET"
                  for i in range(40)]
        stream = "\n".join(lines).encode("ascii")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {content_id} 0 R "
                       f"/Resources << /Font << /F1 {font_ref + 0} 0 R >> >> >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    head = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {pages} >>".encode()]
    objects = head + objects + [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{index} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
