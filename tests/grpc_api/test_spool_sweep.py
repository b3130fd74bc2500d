"""Spool files outlive no process for long: each process spools into a folder of its own, held
by a lock while it lives, and a sweep (each worker's start) removes the folders no live process
holds, with any upload a killed worker was taking in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc

from signserver.descriptors import DescriptorReserve
from signserver.grpc_api.spool import SpoolFile, process_folder, sweep
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import application

ROOT = Path(__file__).resolve().parents[2]

# A process that spools a named file, says where, and waits to be killed.
SPOOLING = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from signserver.descriptors import DescriptorReserve
    from signserver.grpc_api.spool import SpoolFile
    spool = SpoolFile(Path(sys.argv[1]), DescriptorReserve(0), named=True)
    spool.write(b"%PDF-1.7 an upload")
    spool.file().flush()
    print(spool.path, flush=True)
    time.sleep(600)
""")


def spooling_process(spool: Path) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen([sys.executable, "-c", SPOOLING, str(spool)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    return process, Path(process.stdout.readline().strip())


def spooled(spool: Path) -> set[Path]:
    return set(spool.rglob("spool-*")) if spool.is_dir() else set()


def test_a_sweep_keeps_a_live_process_s_files_and_removes_a_killed_one_s(tmp_path):
    spool = tmp_path / "spool"
    process, path = spooling_process(spool)
    try:
        assert path.is_file() and path.parent.parent == spool
        assert sweep(spool) == 0
        assert path.is_file()
    finally:
        process.kill()
        process.wait()
    assert sweep(spool) == 1
    assert not path.parent.exists()
    assert list(spool.iterdir()) == []


def test_a_sweep_keeps_its_own_process_s_files(tmp_path):
    spool = tmp_path / "spool"
    with SpoolFile(spool, DescriptorReserve(0), named=True) as mine:
        mine.write(b"%PDF-1.7 an upload")
        assert sweep(spool) == 0
        assert mine.path.is_file() and mine.path.parent == process_folder(spool)
    assert process_folder(spool).is_dir()


def test_a_sweep_removes_loose_files_of_earlier_versions(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "spool-abc123").write_bytes(b"%PDF-1.7 an upload")
    (spool / "unrelated").write_bytes(b"kept")
    assert sweep(spool) == 1
    assert sorted(p.name for p in spool.iterdir()) == ["unrelated"]


def test_a_worker_killed_during_an_upload_leaves_no_spool_file_behind(state_dir, tmp_path):
    spool = state_dir / "spool"
    server = ServeProcess(state_dir, tmp_path, workers=1).start()
    release = threading.Event()
    try:
        credentials = application(server, "spool-sweep-app")
        before = spooled(spool)

        def requests():
            yield document_pb2.VerifyPdfRequest(chunk=sample_pdf(20))
            release.wait(60)

        channel = grpc.secure_channel(f"localhost:{server.port}", credentials)
        call = document_pb2_grpc.DocumentServiceStub(channel).VerifyPdf.future(requests(), timeout=90)
        deadline = time.monotonic() + 60
        while spooled(spool) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        left = spooled(spool) - before
        assert left, "the upload never reached the spool"

        os.kill(server.worker_pids()[-1], signal.SIGKILL)  # as the kernel's OOM killer does
        server.wait_for(r"worker \d+ \(pid \d+\) exited with -9; starting it again")
        server.wait_for(r"worker \d+ \(pid \d+\) serving on", count=2)  # swept before it serves
        release.set()
        try:
            call.result()
        except grpc.RpcError:
            pass
        channel.close()
        assert not left & spooled(spool), f"left behind: {left}"
        assert not any(path.parent.exists() for path in left)
    finally:
        release.set()
        server.stop()
