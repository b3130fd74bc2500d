"""Fixtures of the RA's tests: its own database (SQLite, or PostgreSQL with
SIGNSERVER_TEST_STORE=postgresql), settings, and the reference registry served on loopback."""

from __future__ import annotations

import datetime

import pytest

from signserver.clock import ManualClock
from signserver.ra.registry import RegistryClient
from signserver.ra.renewal import Holder
from signserver.ra.settings import RaSettings
from signserver.ra.store.database import RaDatabase
from signserver.registry_dev.app import RegistryState
from signserver.registry_dev.identities import load_identities
from signserver.registry_dev.server import SAMPLE_FIXTURES, RunningRegistry
from tests.ca.conftest import ca_clock, ca_service  # noqa: F401 (fixtures: a CA with its clock)
from tests.ca.test_certificate_service import served  # noqa: F401 (a fixture: that CA served over mutual TLS)
from tests.conftest import ra_database_url

PHOTOS = SAMPLE_FIXTURES.parent / "photos"
START = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc)

# Registered as the sample registry holds them (signserver/registry_dev/fixtures/registry.toml).
KUAN = Holder("kuan-ws", "BIR", "1234567(8)", "KUAN WENG SAM LUZIA", datetime.date(1985, 3, 14),
              ("kuan@example.mo", "luzia.kuan@example.mo"))
CHAN_EXPIRED = Holder("chan-tm", "BIR", "7654321(0)", "CHAN TAI MAN", datetime.date(1970, 11, 2), ("chan@example.mo",))
SILVA_PASSPORT = Holder("silva-m", "PASSPORT", "CB123456", "MARIA DA SILVA", datetime.date(1990, 7, 21),
                        ("maria@example.pt",))


@pytest.fixture
def ra_clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def ra_database(tmp_path):
    database = RaDatabase(ra_database_url(tmp_path / "ra.sqlite"))  # migrated
    yield database
    database.close()


@pytest.fixture
def ra_settings(tmp_path) -> RaSettings:
    return RaSettings(state_dir=tmp_path, face_threshold=0.8)


@pytest.fixture(scope="module")
def registry():
    with RunningRegistry(RegistryState(load_identities(SAMPLE_FIXTURES))) as running:
        yield running


@pytest.fixture
def registry_client(registry):
    registry.state.faults.clear()
    with RegistryClient(registry.url, timeout_seconds=10, attempts=2, backoff_seconds=0) as client:
        yield client
    registry.state.faults.clear()


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


HEIC_START = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"  # an iPhone photo's first box


def webp_image() -> bytes:
    import io

    from PIL import Image

    made = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(made, "WEBP")
    return made.getvalue()


def files_not_taken() -> list[tuple[str, bytes, str]]:
    """Files a holder may send as a photo that the registry would not take, as (file name, content,
    declared type): an iPhone's HEIC, a WebP (declared as itself, and as a JPEG), text named
    photo.jpg, a PNG cut off after three bytes."""
    return [("IMG_0001.HEIC", HEIC_START + b"\x00" * 64, "image/heic"), ("photo.webp", webp_image(), "image/webp"),
            ("photo.jpg", b"not a photo at all " * 20, "image/jpeg"), ("photo.png", b"\x89PN", "image/png"),
            ("photo.webp", webp_image(), "image/jpeg")]


def opened_renewal(database: RaDatabase, holder: Holder, now: datetime.datetime, *,
                   profile: str = "cloud-signature-government", serial: str = "5e1a",
                   expires: datetime.datetime | None = None):
    """A renewal as `confirm-renewal` opens it from the core's record, written straight to the RA's
    store (for the tests of the steps that do not involve the core)."""
    import uuid

    from signserver.ra import renewal as machine
    from signserver.ra.store import repository

    with database.transaction() as conn:
        repository.save_holder(conn, holder, now)
        opened = machine.open_renewal(uuid.uuid4().hex, serial=serial, account=holder.account, profile=profile,
                                      expires=expires or now + datetime.timedelta(days=45), holder=holder, now=now)
        return repository.insert_renewal(conn, opened)


class NoCore:
    """The workflow's core for tests whose steps never reach it: any call fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the core was asked ({name}) where it should not be")


class InlineExecutor:
    """Runs a submitted task at once, in the caller's thread: the activation's outcome is there
    when start_activation returns. ``hold`` keeps the tasks instead, as a process stopped before
    running them would."""

    def __init__(self, hold: bool = False):
        self.hold = hold
        self.held: list = []

    def submit(self, task, *args):
        if self.hold:
            self.held.append((task, args))
        else:
            task(*args)


def application_signed_in_store(database: RaDatabase, renewal_id: str):
    """The renewal's application recorded as signed, written straight to the RA's store (for the
    tests of the steps after it that do not involve the application: tests/ra/test_application.py
    signs it for real)."""
    import hashlib

    from signserver.ra import renewal as machine
    from signserver.ra.store import repository

    with database.transaction() as conn:
        renewal = repository.get_renewal(conn, renewal_id)
        digest = hashlib.sha256(f"signed application {renewal_id}".encode()).hexdigest()
        return repository.save_renewal(conn, machine.application_signed(renewal, digest, renewal.updated_at))
