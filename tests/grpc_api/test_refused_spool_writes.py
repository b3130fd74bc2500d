"""A file system that refuses the files documents pass through (full, read-only) refuses the
document calls as UNAVAILABLE with the reason SPOOL_UNAVAILABLE, never INTERNAL: the file is
closed and removed at once, and the log says what the file system answered, nothing of the
caller's. The disks are small tmpfs mounts of their own, filled for real."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from signserver.clock import SystemClock
from signserver.descriptors import DescriptorReserve
from signserver.errors import SpoolUnavailable
from signserver.grpc_api.spool import SpoolFile, process_folder
from signserver.monitoring.fault_log import FaultLog
from signserver.pades import pending
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.grpc_api.serve_process import with_own_token
from tests.grpc_api.test_certificate_service_callers import reason_of
from tests.grpc_api.test_workers import PASSWORD, application, holder

LOGGED = "refuses a document's file"


def mounted(folder: Path, size: str) -> Path:
    """A tmpfs of ``size`` at ``folder`` (made here); the test is skipped where mounting is not allowed."""
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    return folder


@pytest.fixture
def small_disk(tmp_path):
    disk = mounted(tmp_path / "disk", "4m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)  # lazily: a process folder's lock may hold it


@pytest.fixture
def logged_anew(monkeypatch):
    """The refusals' log line as if none had been written in this process yet, and none written
    again within the test however long it takes."""
    monkeypatch.setattr(pending, "_refusals", FaultLog(pending.log, SystemClock(), interval=float("inf")))


def fill(folder: Path) -> Path:
    """Write into ``folder`` until its file system is full; returns the file that filled it."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:  # unbuffered: nothing is left to write at the close
            os.write(descriptor, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return filler


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("named", [False, True])
def test_a_write_to_a_full_disk_is_refused_and_the_file_removed(small_disk, logged_anew, caplog, named):
    spool = small_disk / "spool"
    filler = fill(small_disk)
    spool_file = SpoolFile(spool, DescriptorReserve(0), named=named)
    with pytest.raises(SpoolUnavailable):
        spool_file.write(b"%PDF-" * 100_000)  # past the buffer: written at once
    assert not spool_file.opened
    assert files_under(spool) == []
    [line] = [r for r in caplog.records if LOGGED in r.getMessage()]
    assert line.levelno == logging.ERROR and "ENOSPC" in line.getMessage() and "%PDF" not in line.getMessage()
    filler.unlink()
    with SpoolFile(spool, DescriptorReserve(0), named=named) as again:  # room made: it takes files again
        again.write(b"%PDF-" * 100_000)
        again.file().flush()


def test_data_the_buffer_held_is_refused_when_flushed(small_disk, logged_anew):
    spool = small_disk / "spool"
    with SpoolFile(spool, DescriptorReserve(0), named=True) as spool_file:
        spool_file.write(b"%PDF-1.7\n")  # the file is made while there is room
        fill(small_disk)
        spool_file.write(b"x" * 100)  # kept in the buffer
        with pytest.raises(SpoolUnavailable):
            spool_file.file().flush()
    assert files_under(spool) == []


def test_a_read_only_disk_refuses_the_spool_folder_and_is_logged_once(small_disk, logged_anew, caplog):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for _ in range(3):
        with pytest.raises(SpoolUnavailable):
            process_folder(small_disk / "spool")
        with pytest.raises(SpoolUnavailable):
            SpoolFile(small_disk / "spool", DescriptorReserve(0)).write(b"%PDF-")
    lines = [r.getMessage() for r in caplog.records if LOGGED in r.getMessage()]
    assert len(lines) == 1 and "EROFS" in lines[0], lines


@pytest.fixture
def served_on_small_disks(tmp_path, font_cache):
    """A server whose state directory, and whose prepared documents' directory, are small disks."""
    state_disk, prepared_disk = mounted(tmp_path / "state-disk", "64m"), mounted(tmp_path / "prepared-disk", "4m")
    state = state_disk / "state"
    server = with_own_token(state, tmp_path / "run", font_cache,
                            SIGNSERVER_PADES_SPOOL_DIR=str(prepared_disk / "prepared")).start()
    yield server, state_disk, prepared_disk, state
    server.stop()
    for disk in (state_disk, prepared_disk):
        subprocess.run(["umount", "-l", str(disk)], check=False)


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_document_calls_on_full_disks_are_unavailable_and_leave_no_file(served_on_small_disks):
    server, state_disk, prepared_disk, state = served_on_small_disks
    credentials = application(server, "full-disk-app")
    credential = holder(server, "full.holder")
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = document_pb2_grpc.DocumentServiceStub(channel)

        def prepare():
            yield document_pb2.PrepareSignatureRequest(header=document_pb2.SignPdfHeader(
                credential_id=credential, level="B-B"))
            yield document_pb2.PrepareSignatureRequest(chunk=sample_pdf(3))

        def sign():
            yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                account="full.holder", password=PASSWORD, credential_id=credential, level="B-B"))
            data = sample_pdf(20, "a document")
            for start in range(0, len(data), 65536):
                yield document_pb2.SignPdfRequest(chunk=data[start:start + 65536])

        def verify(pages: int):
            return stub.VerifyPdf(iter([document_pb2.VerifyPdfRequest(chunk=sample_pdf(pages, "a document"))]),
                                  timeout=60)

        fill(prepared_disk)
        refused = [refusal(lambda: stub.PrepareSignature(prepare(), timeout=60))]
        assert files_under(prepared_disk) == ["filler"]
        filler = fill(state_disk)
        refused += [refusal(lambda: verify(1)), refusal(lambda: verify(200)),
                    refusal(lambda: list(stub.SignPdf(sign(), timeout=60)))]
        unavailable = (grpc.StatusCode.UNAVAILABLE, "SPOOL_UNAVAILABLE")
        assert [(e.code(), reason_of(e)) for e in refused] == [unavailable] * 4, (
            [e.details() for e in refused], server.text()[-3000:])
        assert files_under(state / "spool") == []
        filler.unlink()
        assert "no signatures" in verify(1).reason  # room made: documents are taken again
    lines = [line for line in server.text().splitlines() if LOGGED in line]
    assert lines and all("ENOSPC" in line and "full.holder" not in line for line in lines), lines
