"""The RA's registry client against the real reference registry (uvicorn on a free loopback port,
real HTTP): lookups, face comparisons, refusals, the registry down and back, bounded retries."""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import io
import ipaddress
import json
import logging
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image, ImageEnhance

from signserver.ra.errors import (IdentityNotFound, PhotoRefused, RegistryRejected, RegistryUnavailable,
                                  SettingsError)
from signserver.ra.registry import (MAX_BACKOFF_SECONDS, MAX_PHOTO_BYTES, IdentityRecord, RegistryClient,
                                    mask_id_number, photo_media_type, read_api_key, registry_ssl_context)
from signserver.ra.settings import RaSettings
from signserver.registry_dev.app import RegistryState
from signserver.registry_dev.faults import Fault
from signserver.registry_dev.identities import load_identities
from signserver.registry_dev.server import SAMPLE_FIXTURES, RunningRegistry, TlsFiles

pytestmark = pytest.mark.one_store  # touches no store

API_KEY = "test-registry-key-4f1c"
PHOTOS = SAMPLE_FIXTURES.parent / "photos"
KUAN = ("BIR", "1234567(8)")
CHAN_EXPIRED = ("BIR", "7654321(0)")
SILVA_PASSPORT = ("PASSPORT", "CB123456")


@pytest.fixture(scope="module")
def registry():
    with RunningRegistry(RegistryState(load_identities(SAMPLE_FIXTURES), api_keys=(API_KEY,))) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_registry(registry):
    """Each test starts with no fault and an empty request log."""
    registry.state.faults.clear()
    registry.state.forget_requests()
    yield
    registry.state.faults.clear()


class Pauses(list):
    """Stands in for time.sleep: records the pauses between attempts instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def pauses() -> Pauses:
    return Pauses()


@pytest.fixture
def client(registry, pauses):
    with RegistryClient(registry.url, timeout_seconds=10, attempts=3, api_key=API_KEY, client_id="ra-test",
                        sleep=pauses) as made:
        yield made


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- lookups ---------------------------------------------------------------------------------


def test_lookup_returns_the_registry_record(client, registry):
    record = client.fetch_identity(*KUAN, consent_reference="renewal-17/consent")
    assert record == IdentityRecord(id_type="BIR", id_number="1234567(8)", name="KUAN WENG SAM LUZIA",
                                    given_name="Weng Sam Luzia", surname="Kuan",
                                    birth_date=datetime.date(1985, 3, 14), expires=datetime.date(2032, 6, 30),
                                    issuing_region="MO")
    [seen] = registry.state.requests("lookup")
    assert (seen.status, seen.client_id) == (200, "ra-test")


def test_lookup_of_a_foreign_and_of_an_expired_document(client):
    passport = client.fetch_identity(*SILVA_PASSPORT, consent_reference="c-1")
    assert (passport.id_type, passport.issuing_region) == ("PASSPORT", "PT")
    expired = client.fetch_identity(*CHAN_EXPIRED, consent_reference="c-2")
    assert expired.issuing_region == "MO" and expired.expires < datetime.date(2026, 1, 1)


def test_an_unknown_document_is_not_found_and_not_asked_again(client, registry, pauses):
    with pytest.raises(IdentityNotFound):
        client.fetch_identity("BIR", "0000000(0)", consent_reference="c-3")
    assert [r.status for r in registry.state.requests()] == [404]
    assert pauses == []


def test_a_lookup_needs_a_consent_reference(client, registry):
    with pytest.raises(ValueError):
        client.fetch_identity(*KUAN, consent_reference=" ")
    assert registry.state.requests() == []


# --- face comparison -------------------------------------------------------------------------


def test_the_same_photo_scores_about_one(client):
    assert client.compare_face(*KUAN, photo("kuan-weng-sam.png"), "image/png") >= 0.99


def test_a_retaken_photo_scores_high_and_another_persons_low(client):
    with Image.open(PHOTOS / "kuan-weng-sam.png") as original:
        # Brighter, cropped a little, enlarged and saved as a JPEG: as a new photo of the same face.
        retaken = ImageEnhance.Brightness(original.convert("RGB")).enhance(1.15).crop((2, 2, 94, 94)).resize((400, 400))
        jpeg = encoded(retaken, "JPEG", quality=80)
        tiff = encoded(original, "TIFF")
    assert client.compare_face(*KUAN, jpeg, "image/jpg") > 0.9
    assert client.compare_face(*KUAN, tiff, "image/tiff") >= 0.99
    assert client.compare_face(*KUAN, photo("maria-silva.png"), "image/png") < 0.5
    assert client.compare_face(*KUAN, photo("chan-tai-man.jpg"), "image/jpeg") < 0.5


@pytest.mark.parametrize("content, media_type", [
    (b"GIF89a" + bytes(100), "image/gif"),  # a media type the contract does not take
    (b"GIF89a" + bytes(100), "image/png"),  # content that is no JPEG, PNG or TIFF
    (photo("kuan-weng-sam.png"), "image/jpeg"),  # content other than its media type
    (b"", "image/png"),
    (b"\x89PNG\r\n\x1a\n" + bytes(MAX_PHOTO_BYTES), "image/png"),  # above 10 MiB
])
def test_a_photo_the_contract_refuses_is_not_sent(client, registry, content, media_type):
    with pytest.raises(PhotoRefused):
        client.compare_face(*KUAN, content, media_type)
    assert registry.state.requests() == []


def test_a_photo_the_registry_cannot_decode_is_refused_once(client, registry, pauses):
    damaged = photo("kuan-weng-sam.png")[:200]
    with pytest.raises(PhotoRefused, match="registry refused the photo"):
        client.compare_face(*KUAN, damaged, "image/png")
    assert [r.status for r in registry.state.requests()] == [422]
    assert pauses == []


def test_a_face_of_an_unknown_document_is_not_found(client):
    with pytest.raises(IdentityNotFound):
        client.compare_face("BIR", "0000000(0)", photo("kuan-weng-sam.png"), "image/png")


def test_the_media_type_is_told_from_the_bytes():
    assert photo_media_type(photo("chan-tai-man.jpg")) == "image/jpeg"
    assert photo_media_type(photo("maria-silva.png")) == "image/png"
    with Image.open(PHOTOS / "maria-silva.png") as image:
        assert photo_media_type(encoded(image, "TIFF")) == "image/tiff"
    with pytest.raises(PhotoRefused):
        photo_media_type(b"%PDF-1.7")


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", ["", "not-the-key"])
def test_the_registry_wants_the_api_key_and_is_not_asked_again(registry, pauses, api_key):
    with RegistryClient(registry.url, timeout_seconds=10, attempts=3, api_key=api_key, sleep=pauses) as stranger:
        with pytest.raises(RegistryRejected, match="credentials"):
            stranger.fetch_identity(*KUAN, consent_reference="c-4")
    assert [r.status for r in registry.state.requests()] == [401]
    assert pauses == []


def test_a_rejection_is_a_kind_of_unavailability():
    # A renewal that catches RegistryUnavailable waits for an operator rather than failing.
    assert issubclass(RegistryRejected, RegistryUnavailable)


def test_the_api_key_is_read_from_a_file(tmp_path):
    path = tmp_path / "registry.key"
    path.write_text("# the RA's key at the registry\n\n  k-123  \n")
    assert read_api_key(path) == "k-123"


# --- the registry down, slow, and back ----------------------------------------------------------


def test_a_registry_down_is_asked_a_bounded_number_of_times_then_back(client, registry, pauses):
    registry.state.faults.set(Fault(status=503))
    with pytest.raises(RegistryUnavailable) as refused:
        client.fetch_identity(*KUAN, consent_reference="c-5")
    assert not isinstance(refused.value, RegistryRejected)
    seen = registry.state.requests()
    assert [r.status for r in seen] == [503, 503, 503]
    assert len({r.request_id for r in seen}) == 1  # one logical call, sent three times
    assert len(pauses) == 2 and all(0 < p <= MAX_BACKOFF_SECONDS for p in pauses)

    registry.state.faults.clear()  # the registry is back
    assert client.fetch_identity(*KUAN, consent_reference="c-5").surname == "Kuan"


def test_a_short_outage_is_ridden_out_by_the_retries(client, registry):
    registry.state.faults.set(Fault(status=502, times=2))
    assert client.compare_face(*KUAN, photo("kuan-weng-sam.png"), "image/png") >= 0.99
    assert [r.status for r in registry.state.requests()] == [502, 502, 200]


def test_a_registry_too_slow_to_answer_is_unavailable(registry, pauses):
    registry.state.faults.set(Fault(delay_seconds=5))
    with RegistryClient(registry.url, timeout_seconds=1, attempts=2, api_key=API_KEY, sleep=pauses) as impatient:
        with pytest.raises(RegistryUnavailable, match="no answer in time"):
            impatient.fetch_identity(*KUAN, consent_reference="c-6")
    assert len(registry.state.requests()) == 2
    assert len(pauses) == 1


def test_a_registry_nobody_listens_for_is_unavailable(pauses):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with RegistryClient(f"http://127.0.0.1:{closed_port}", timeout_seconds=2, attempts=4, sleep=pauses) as lost:
        with pytest.raises(RegistryUnavailable, match="no connection"):
            lost.fetch_identity(*KUAN, consent_reference="c-7")
    assert len(pauses) == 3
    assert pauses[-1] <= MAX_BACKOFF_SECONDS


def test_one_attempt_means_no_retry(registry, pauses):
    registry.state.faults.set(Fault(status=500))
    with RegistryClient(registry.url, timeout_seconds=10, attempts=1, api_key=API_KEY, sleep=pauses) as once:
        with pytest.raises(RegistryUnavailable):
            once.fetch_identity(*KUAN, consent_reference="c-8")
    assert len(registry.state.requests()) == 1 and pauses == []


def test_logs_show_the_id_number_masked(client, registry, caplog):
    registry.state.faults.set(Fault(status=503, times=1))
    with caplog.at_level(logging.DEBUG, logger="signserver.ra.registry"):
        client.fetch_identity(*KUAN, consent_reference="c-9")
    assert caplog.records, "a retry is logged"
    assert "1234567(8)" not in caplog.text
    assert "*******(8)" in caplog.text


def test_an_id_number_is_masked_but_its_end():
    assert mask_id_number("1234567(8)") == "*******(8)"
    assert mask_id_number("12345") == "*****"


def test_the_client_refuses_settings_it_cannot_use():
    for url in ("ftp://registry", "registry.example:443", "https://"):
        with pytest.raises(ValueError):
            RegistryClient(url, timeout_seconds=1, attempts=1)
    with pytest.raises(ValueError):
        RegistryClient("https://registry.example", timeout_seconds=0, attempts=1)
    with pytest.raises(ValueError):
        RegistryClient("https://registry.example", timeout_seconds=1, attempts=0)


# --- HTTPS with mutual TLS ---------------------------------------------------------------------


def issued(name: str, issuer_key, issuer_name, key, *, ca: bool = False, ip: str | None = None) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer_key`` (self-signed when ``issuer_name`` is None)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory):
    """A CA, the registry's certificate for 127.0.0.1 and an RA client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("registry-tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issued("Registry test CA", ca_key, None, ca_key, ca=True)
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = issued(f"registry {role}", ca_key, ca.subject, key, ip=ip)
        files[role] = folder / f"{role}.pem"
        files[role].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        files[f"{role}-key"] = folder / f"{role}-key.pem"
        files[f"{role}-key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return files


def test_mutual_tls_lets_in_the_ra_with_its_certificate_only(tls_material, pauses):
    tls = TlsFiles(tls_material["server"], tls_material["server-key"], client_ca=tls_material["ca"])
    with RunningRegistry(RegistryState(load_identities(SAMPLE_FIXTURES)), tls=tls) as secured:
        assert secured.url.startswith("https://127.0.0.1:")
        with_certificate = ssl.create_default_context(cafile=str(tls_material["ca"]))
        with_certificate.load_cert_chain(tls_material["client"], tls_material["client-key"])
        with RegistryClient(secured.url, timeout_seconds=10, attempts=2, ssl_context=with_certificate) as ra:
            assert ra.fetch_identity(*KUAN, consent_reference="c-10").issuing_region == "MO"
        without = ssl.create_default_context(cafile=str(tls_material["ca"]))
        with RegistryClient(secured.url, timeout_seconds=10, attempts=2, ssl_context=without, sleep=pauses) as other:
            with pytest.raises(RegistryUnavailable):
                other.fetch_identity(*KUAN, consent_reference="c-11")
        assert len(secured.state.requests()) == 1  # only the RA's call got through


def test_the_settings_give_the_registry_client_its_tls(tls_material, tmp_path):
    from signserver.ra.server import registry_client

    tls = TlsFiles(tls_material["server"], tls_material["server-key"], client_ca=tls_material["ca"])
    with RunningRegistry(RegistryState(load_identities(SAMPLE_FIXTURES)), tls=tls) as secured:
        settings = RaSettings(state_dir=tmp_path, registry_url=secured.url, registry_attempts=1,
                              registry_ca=tls_material["ca"], registry_client_cert=tls_material["client"],
                              registry_client_key=tls_material["client-key"])
        with registry_client(settings) as ra:
            assert ra.fetch_identity(*KUAN, consent_reference="c-12").issuing_region == "MO"
        without_certificate = dataclasses.replace(settings, registry_client_cert=None, registry_client_key=None)
        with registry_client(without_certificate) as other:
            with pytest.raises(RegistryUnavailable):  # the registry asks for the RA's certificate
                other.fetch_identity(*KUAN, consent_reference="c-13")
        assert len(secured.state.requests()) == 1


def test_unusable_registry_tls_files_are_a_settings_error(tls_material, tmp_path):
    (tmp_path / "not-pem.pem").write_text("nothing here", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"ra\.registry_ca"):
        registry_ssl_context(tmp_path / "absent.pem", None)
    with pytest.raises(SettingsError, match=r"ra\.registry_client_cert") as refused:
        registry_ssl_context(tls_material["ca"], (tmp_path / "not-pem.pem", tls_material["client-key"]))
    assert "BEGIN" not in str(refused.value)
    assert registry_ssl_context(None, None) is None


# --- a registry outside the contract -------------------------------------------------------------


class ScriptedRegistry(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the server's ``answer`` (status, body): a registry gone astray."""

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def astray():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ScriptedRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


LOOKED_UP = {"id_type": "BIR", "id_number": "1234567(8)", "name": "N", "given_name": "G", "surname": "S",
             "birth_date": "1985-03-14", "expires": "2032-06-30", "issuing_region": "MO"}


@pytest.mark.parametrize("status, body", [
    (200, b"<html>maintenance</html>"),
    (200, b"[]"),
    (200, json.dumps({**LOOKED_UP, "expires": "soon"}).encode()),
    (200, json.dumps({**LOOKED_UP, "surname": None}).encode()),
    (200, json.dumps({**LOOKED_UP, "id_number": "7654321(0)"}).encode()),  # another person's data
])
def test_a_lookup_answer_outside_the_contract_is_unavailability(astray, pauses, status, body):
    astray.answer = (status, body)
    url = f"http://127.0.0.1:{astray.server_address[1]}"
    with RegistryClient(url, timeout_seconds=10, attempts=2, sleep=pauses) as client:
        with pytest.raises(RegistryUnavailable) as refused:
            client.fetch_identity(*KUAN, consent_reference="c-12")
    assert not isinstance(refused.value, RegistryRejected)


@pytest.mark.parametrize("body", [b'{"score": 1.5}', b'{"score": "0.9"}', b'{"score": true}', b"{}", b'{"score": NaN}'])
def test_a_score_outside_the_contract_is_unavailability(astray, body):
    astray.answer = (200, body)
    with RegistryClient(f"http://127.0.0.1:{astray.server_address[1]}", timeout_seconds=10, attempts=1) as client:
        with pytest.raises(RegistryUnavailable):
            client.compare_face(*KUAN, photo("kuan-weng-sam.png"), "image/png")


def test_a_404_that_is_not_a_missing_identity_is_a_rejection(astray):
    astray.answer = (404, b'{"error": "no_such_endpoint"}')
    with RegistryClient(f"http://127.0.0.1:{astray.server_address[1]}", timeout_seconds=10, attempts=3) as client:
        with pytest.raises(RegistryRejected):
            client.fetch_identity(*KUAN, consent_reference="c-13")
