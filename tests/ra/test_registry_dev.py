"""The reference registry itself: its fixture file, its face comparison, its HTTP answers to what a
client should not send, its fault switches over HTTP, and the program (``main``)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from signserver.registry_dev import main
from signserver.registry_dev.app import MAX_BODY_BYTES, RegistryState
from signserver.registry_dev.faces import PhotoRejected, face_signature, similarity
from signserver.registry_dev.identities import FixtureError, load_identities
from signserver.registry_dev.sample_photos import main as draw_sample_photos
from signserver.registry_dev.server import SAMPLE_FIXTURES, RunningRegistry, StartError, read_api_keys
from tests.conftest import LOOPBACK_TLS

pytestmark = pytest.mark.one_store  # touches no store

PHOTOS = SAMPLE_FIXTURES.parent / "photos"
KUAN = {"id_type": "BIR", "id_number": "1234567(8)"}
KEY = "dev-key-91"


@pytest.fixture(scope="module")
def registry():
    with RunningRegistry(RegistryState(load_identities(SAMPLE_FIXTURES), api_keys=(KEY, "second-key"))) as running:
        yield running


@pytest.fixture
def http(registry):
    registry.state.faults.clear()
    with httpx.Client(base_url=registry.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                      verify=LOOPBACK_TLS) as made:
        yield made
    registry.state.faults.clear()


# --- the fixture file ------------------------------------------------------------------------


def test_the_sample_holds_a_macau_an_expired_and_a_foreign_document():
    identities = load_identities(SAMPLE_FIXTURES)
    assert len(identities) == 3
    assert {i.issuing_region for i in identities.values()} == {"MO", "PT"}
    assert any(i.expires.year < 2026 for i in identities.values())
    assert all(len(i.face) == 32 * 32 for i in identities.values())


def write_fixture(folder: Path, entry: str) -> Path:
    (folder / "face.png").write_bytes((PHOTOS / "maria-silva.png").read_bytes())
    path = folder / "registry.toml"
    path.write_text("[[identity]]\n" + entry)
    return path


GOOD_ENTRY = """id_type = "BIR"
id_number = "1"
name = "A B"
given_name = "A"
surname = "B"
birth_date = 1990-01-01
expires = 2030-01-01
issuing_region = "MO"
photo = "face.png"
"""


@pytest.mark.parametrize("entry, complaint", [
    (GOOD_ENTRY.replace('surname = "B"\n', ""), "surname"),
    (GOOD_ENTRY.replace("expires = 2030-01-01", 'expires = "2030-01-01"'), "expires"),
    (GOOD_ENTRY.replace("face.png", "missing.png"), "missing.png"),
    (GOOD_ENTRY.replace("face.png", "registry.toml"), "photo"),
    (GOOD_ENTRY + "\n[[identity]]\n" + GOOD_ENTRY, "repeats"),
    ("id_type = [", "registry.toml"),
])
def test_a_fixture_file_it_cannot_use_is_named_with_the_fault(tmp_path, entry, complaint):
    with pytest.raises(FixtureError, match=complaint.replace(".", r"\.")):
        load_identities(write_fixture(tmp_path, entry))


def test_a_usable_fixture_file_loads(tmp_path):
    [(key, identity)] = load_identities(write_fixture(tmp_path, GOOD_ENTRY)).items()
    assert key == ("BIR", "1") and identity.as_json()["birth_date"] == "1990-01-01"


def test_the_sample_photos_are_drawn_again_alike(tmp_path):
    assert draw_sample_photos([str(tmp_path)]) == 0
    for name in ("kuan-weng-sam.png", "chan-tai-man.jpg", "maria-silva.png"):
        media_type = "image/jpeg" if name.endswith(".jpg") else "image/png"
        drawn = face_signature((tmp_path / name).read_bytes(), media_type)
        shipped = face_signature((PHOTOS / name).read_bytes(), media_type)
        assert similarity(drawn, shipped) >= 0.99


# --- the face comparison ---------------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_photo_of_one_flat_colour_matches_nothing():
    flat = face_signature(png(Image.new("RGB", (50, 50), (128, 90, 40))), "image/png")
    kuan = face_signature((PHOTOS / "kuan-weng-sam.png").read_bytes(), "image/png")
    assert similarity(flat, kuan) == 0.0


def test_an_inverted_photo_scores_zero():
    with Image.open(PHOTOS / "kuan-weng-sam.png") as original:
        inverted = Image.eval(original.convert("L"), lambda v: 255 - v)
        assert similarity(face_signature(png(original), "image/png"), face_signature(png(inverted), "image/png")) == 0.0


def test_an_image_too_large_to_decode_is_refused():
    # A few kilobytes of PNG that would decode to 100 million pixels.
    bomb = png(Image.new("1", (10_000, 10_000)))
    assert len(bomb) < 100_000
    with pytest.raises(PhotoRejected, match="pixels"):
        face_signature(bomb, "image/png")


@pytest.mark.parametrize("content, media_type", [
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "image/png"),
    (b"\xff\xd8\xff" + os.urandom(500), "image/jpeg"),
    (b"II*\x00" + bytes(40), "image/tiff"),
    (b"GIF89a", "image/gif"),
])
def test_a_photo_that_does_not_decode_is_refused(content, media_type):
    with pytest.raises(PhotoRejected):
        face_signature(content, media_type)


# --- the HTTP answers --------------------------------------------------------------------------


def test_a_lookup_without_consent_is_refused_even_for_an_unknown_document(http):
    for body in (KUAN, {"id_type": "BIR", "id_number": "none", "consent_reference": ""}):
        answer = http.post("/v1/identities/lookup", json=body)
        assert (answer.status_code, answer.json()["error"]) == (400, "consent_required")


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"id_type": 5, "id_number": "1"}',
                                     b'{"id_type": "BIR", "id_number": "' + b"9" * 500 + b'"}', b"[" * 100_000])
def test_a_malformed_request_is_a_400(http, content):
    body = json.loads(content) if content.startswith(b"{") else None
    if body is not None:
        body["consent_reference"] = "c"
        content = json.dumps(body).encode()
    answer = http.post("/v1/identities/lookup", content=content, headers={"Content-Type": "application/json"})
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")


def test_a_photo_that_is_not_base64_is_a_400(http):
    answer = http.post("/v1/faces/compare", json={**KUAN, "media_type": "image/png", "photo": "!!not base64!!"})
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")


def test_a_photo_it_cannot_compare_is_a_422(http):
    answer = http.post("/v1/faces/compare", json={**KUAN, "media_type": "image/gif",
                                                  "photo": base64.b64encode(b"GIF89a").decode()})
    assert (answer.status_code, answer.json()["error"]) == (422, "photo_refused")


def test_a_body_too_large_is_a_413_before_it_is_read(http):
    answer = http.post("/v1/faces/compare", content=b"x" * (MAX_BODY_BYTES + 1))
    assert (answer.status_code, answer.json()["error"]) == (413, "too_large")


def test_an_unknown_path_is_not_a_missing_identity(http):
    answer = http.post("/v1/identities/search", json=KUAN)
    assert (answer.status_code, answer.json()["error"]) == (404, "no_such_endpoint")
    answer = http.get("/v1/identities/lookup")
    assert answer.status_code == 405


def test_every_configured_key_is_accepted_and_only_those(registry):
    for key, status in (("second-key", 200), (KEY, 200), ("second", 401), ("", 401)):
        answer = httpx.post(f"{registry.url}/v1/identities/lookup", json={**KUAN, "consent_reference": "c"},
                            headers={"Authorization": f"Bearer {key}"} if key else {})
        assert answer.status_code == status, key
        if status == 401:
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")


def test_faults_are_switched_over_http(http):
    assert http.post("/dev/faults", json={"status": 503, "times": 1}).json()["times"] == 1
    down = http.post("/v1/identities/lookup", json={**KUAN, "consent_reference": "c"})
    assert (down.status_code, down.json()["error"], down.headers["retry-after"]) == (503, "unavailable", "1")
    assert http.post("/v1/identities/lookup", json={**KUAN, "consent_reference": "c"}).status_code == 200
    assert http.get("/dev/faults").json() == {"status": 0, "delay_seconds": 0.0, "times": None}
    for bad in ({"status": 200}, {"status": "503"}, {"delay_seconds": -1}, {"times": 0}, {"status": True}):
        assert http.post("/dev/faults", json=bad).status_code == 400, bad
    assert httpx.post(f"{http.base_url}/dev/faults", json={"status": 503}).status_code == 401
    assert http.delete("/dev/faults").json()["status"] == 0


def test_the_requests_seen_are_listed_and_forgotten(http):
    http.delete("/dev/requests")
    http.post("/v1/identities/lookup", json={**KUAN, "consent_reference": "c"}, headers={"X-Request-Id": "r-1"})
    [seen] = http.get("/dev/requests").json()["requests"]
    assert seen == {"endpoint": "lookup", "request_id": "r-1", "client_id": "", "status": 200}
    assert http.delete("/dev/requests").json() == {"requests": []}


# --- the program -------------------------------------------------------------------------------


def test_the_program_serves_the_fixtures_behind_its_api_key(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# keys of the RAs\nprogram-key\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "signserver.registry_dev", "--listen", "127.0.0.1:0", "--fixtures",
         str(SAMPLE_FIXTURES), "--api-key-file", str(key_file), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("registry-dev listening on http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[3]
        body = {"id_type": "PASSPORT", "id_number": "CB123456", "consent_reference": "c"}
        assert httpx.post(f"{url}/v1/identities/lookup", json=body).status_code == 401
        answer = httpx.post(f"{url}/v1/identities/lookup", json=body, headers={"Authorization": "Bearer program-key"})
        assert answer.json()["issuing_region"] == "PT"
    finally:
        process.terminate()
        process.wait(30)


def test_the_program_will_not_start_on_what_it_cannot_use(tmp_path, capsys):
    assert main(["--listen", "127.0.0.1:0", "--fixtures", str(tmp_path / "none.toml")]) == 2
    assert "none.toml" in capsys.readouterr().err
    (tmp_path / "empty-keys").write_text("# nothing\n")
    assert main(["--listen", "127.0.0.1:0", "--api-key-file", str(tmp_path / "empty-keys")]) == 2
    assert main(["--listen", "nowhere"]) == 2
    assert main(["--listen", "127.0.0.1:0", "--certificate", str(tmp_path / "none.pem"),
                 "--private-key", str(tmp_path / "none.pem")]) == 2
    with pytest.raises(SystemExit):
        main(["--listen", "127.0.0.1:0", "--certificate", str(tmp_path / "c.pem")])  # no key


def test_api_keys_are_read_one_a_line(tmp_path):
    path = tmp_path / "keys"
    path.write_text("a\n\n# b\n c \n")
    assert read_api_keys(path) == ("a", "c")
    with pytest.raises(StartError):
        read_api_keys(tmp_path / "absent")
