"""Small PDFs written object by object, with an empty signature field of the test's choosing, and
an HTTP listener that records what is posted to it."""

from __future__ import annotations

import contextlib
import http.server
import threading

FIELD_FORM = b"/AcroForm << /Fields [4 0 R] /SigFlags 3 >>"
PAGE_WITH_FIELD = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots [4 0 R] >>"


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF of these objects (1 0 obj is the catalogue), with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def with_empty_field(seed_values: bytes = b"", name: str = "Sig1") -> bytes:
    """One page with an empty signature field ``name`` whose seed value dictionary (/SV) holds
    ``seed_values`` (none when empty)."""
    seed = b" /SV << /Type /SV " + seed_values + b" >>" if seed_values else b""
    widget = (b"<< /Type /Annot /Subtype /Widget /FT /Sig /T (" + name.encode() + b") /F 4 "
              b"/Rect [100 100 400 200] /P 3 0 R" + seed + b" >>")
    return raw_pdf([b"<< /Type /Catalog /Pages 2 0 R " + FIELD_FORM + b" >>",
                    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", PAGE_WITH_FIELD, widget])


def asking_for_time_stamp(url: str, required: bool = True) -> bytes:
    """An empty field "Sig1" whose seed value names a time-stamping authority at ``url``, and
    requires a time-stamp (/Ff 1) if ``required``."""
    return with_empty_field(b"/TimeStamp << /URL (" + url.encode() + b") /Ff " + (b"1" if required else b"0")
                            + b" >>")


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posted.append(self.path)
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def listener(status: int = 500, body: bytes = b""):
    """An HTTP server on a free port that answers every POST with ``status`` and ``body``;
    yields (its address, the paths posted to)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.posted, server.status, server.body = [], status, body
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/internal/only", server.posted
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
