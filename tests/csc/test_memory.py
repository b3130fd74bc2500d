"""signDoc under a worker's memory bound: large bodies are admitted while the worker's documents
fit its bound, each application within its share; the rest are refused at once, before their body
is read, with 429 MEMORY_EXHAUSTED, and the worker serves on within its bound. A request that
reaches the bound all the same is refused alike, never answered as the caller's error nor dropped."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from signserver.pades.sample import sample_pdf
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, holder

BOUND_MB = 320  # a worker at rest holds about 190-240 MiB of data
MAX_DOCUMENT_MB = 8
# A document of about 6 MB: its signDoc body (base64, about 8 MB) fits the body limit of
# MAX_DOCUMENT_MB; a few at once, read and decoded whole, need more than is left of BOUND_MB.
LARGE_PAGES = 2_000
AT_ONCE = 6


def statm_data_mib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[5]) * 4096 >> 20


def sign_doc_body(folder: Path, name: str, credential: str, document: bytes) -> Path:
    body = folder / f"{name}.json"
    body.write_text(json.dumps({
        "credentialID": credential, "authData": [{"id": "PIN", "value": PASSWORD}],
        "documents": [{"document": base64.b64encode(document).decode("ascii"), "signature_format": "P",
                       "stamp": {"visible": False}}]}))
    return body


def application_files(server: ServeProcess, name: str) -> tuple[Path, Path]:
    """An application allowed one-call signing, no OTP, with a client certificate: its files."""
    made = server.cli("app", "create", name, "--no-otp")
    assert made.returncode == 0, made.stderr
    server.client_credentials(name)
    return server.client_files


def post(server: ServeProcess, port: int, client: tuple[Path, Path], body: Path) -> tuple[int, int, str]:
    """curl's exit code, the HTTP status (0: none) and the answer's body. curl sends a large body
    after ``Expect: 100-continue``, so a refusal before the body is read reaches it whole."""
    cert, key = client
    done = subprocess.run(["curl", "-sS", "--cert", str(cert), "--key", str(key), "--cacert",
                           str(server.folder / "ca.pem"), "-o", "-", "-w", "\n%{http_code}",
                           "-H", "Content-Type: application/json", "--data-binary", f"@{body}",
                           f"https://127.0.0.1:{port}/csc/v2/signatures/signDoc"],
                          capture_output=True, text=True, timeout=300)
    answer, _, status = done.stdout.rpartition("\n")
    return done.returncode, int(status or 0), answer or done.stderr


@pytest.fixture(scope="module")
def large_document() -> bytes:
    return sample_pdf(LARGE_PAGES)


def test_large_sign_docs_at_once_are_admitted_within_the_bound_and_the_rest_refused_as_memory_exhausted(
        state_dir, tmp_path, large_document):
    server = ServeProcess(state_dir, tmp_path, workers=1, SIGNSERVER_SERVER_WORKER_MEMORY_MB=str(BOUND_MB),
                          SIGNSERVER_PADES_MAX_DOCUMENT_MB=str(MAX_DOCUMENT_MB)).start()
    try:
        port = server.wait_for(r"CSC API on https://[^:]+:(\d+)/")
        [worker] = server.worker_pids()
        credential = holder(server, "memory.holder")
        flooder = application_files(server, "flooder")
        bystander = application_files(server, "bystander")
        large = sign_doc_body(tmp_path, "large", credential, large_document)
        small = sign_doc_body(tmp_path, "small", credential, sample_pdf(1))

        peak = 0
        with concurrent.futures.ThreadPoolExecutor(AT_ONCE + 1) as pool:
            flood = [pool.submit(post, server, port, flooder, large) for _ in range(AT_ONCE)]
            other = pool.submit(post, server, port, bystander, small)
            while not all(f.done() for f in flood + [other]):
                peak = max(peak, statm_data_mib(worker))
                time.sleep(0.02)
        answers = [f.result() for f in flood]

        # No connection dropped, no answer cut short.
        assert [code for code, _, _ in answers] == [0] * AT_ONCE, ([a[:2] for a in answers], server.text()[-3000:])
        signed = [a for a in answers if a[1] == 200]
        refused = [a for a in answers if a[1] != 200]
        assert signed and refused, [a[:2] for a in answers]
        for _, status, body in refused:
            assert status == 429, body
            assert json.loads(body)["error_reason"] == "MEMORY_EXHAUSTED", body
        for _, _, body in signed:
            assert base64.b64decode(json.loads(body)["DocumentWithSignature"][0]).startswith(b"%PDF")
        # Another application's small request is served meanwhile: its share is its own.
        code, status, body = other.result()
        assert (code, status) == (0, 200), body

        assert peak < BOUND_MB, peak
        log = server.text()
        assert "MemoryError" not in log and "exited with" not in log, log[-4000:]
        assert server.worker_pids() == [worker]
    finally:
        server.stop()


async def asgi_call(app, path: str, headers: dict[str, str], chunks: list[bytes | MemoryError]) -> tuple[int, dict]:
    """Call ``app`` as the server does, the body in ``chunks`` (a MemoryError: raised where that
    part of the body would be read). Returns the status and the JSON answer."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 443), "state": {}}
    parts = list(chunks)
    sent: list[dict] = []

    async def receive():
        if not parts:
            return {"type": "http.disconnect"}
        part = parts.pop(0)
        if isinstance(part, MemoryError):
            raise part
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def test_a_memory_error_while_a_body_is_read_is_429_memory_exhausted(csc_server, access_token):
    from signserver.http.csc.app import create_csc_app

    app = create_csc_app(csc_server.context)
    headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json",
               "Content-Length": "40"}
    for path in ("/csc/v2/signatures/signDoc", "/csc/v2/credentials/list"):
        status, answer = asyncio.run(asgi_call(app, path, headers, [b'{"credentialID": ', MemoryError()]))
        assert (status, answer["error_reason"]) == (429, "MEMORY_EXHAUSTED"), answer
        assert answer["error"] == "too_many_requests"


def test_a_chunked_sign_doc_body_is_weighed_as_it_arrives(csc_server, access_token):
    from signserver.http.csc.app import create_csc_app
    from signserver.http.csc.body_budget import BodyBudget, body_weight

    budget = BodyBudget(total=body_weight(1 << 20), per_application=body_weight(1 << 19))
    app = create_csc_app(csc_server.context, budget)
    headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json",
               "Transfer-Encoding": "chunked"}
    status, answer = asyncio.run(asgi_call(app, "/csc/v2/signatures/signDoc", headers,
                                           [b'{"credentialID": "x", "SAD": "', b"A" * (1 << 19), b"A" * (1 << 19),
                                            b'"}']))
    assert (status, answer["error_reason"]) == (429, "MEMORY_EXHAUSTED"), answer
    assert budget.held == 0  # given back once answered
    # Within the budget, the same request reaches the endpoint, which refuses it on its merits.
    status, answer = asyncio.run(asgi_call(app, "/csc/v2/signatures/signDoc", headers,
                                           [b'{"credentialID": "x", "SAD": "', b"A" * 100, b'"}']))
    assert (status, answer["error_reason"]) == (400, "INVALID_ARGUMENT"), answer
    assert budget.held == 0
