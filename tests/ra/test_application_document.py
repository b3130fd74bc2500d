"""The application document alone: the same data give the same bytes, other data other bytes,
and the text is set in the CJK face (Traditional Chinese with Portuguese and English)."""

from __future__ import annotations

import datetime
import io
from dataclasses import replace
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.ra.application_document import TITLE, ApplicationData, FontSource, _subset, profile_names, render
from signserver.ra.errors import SettingsError

pytestmark = pytest.mark.one_store  # touches no store

UTC = datetime.timezone.utc
DATA = ApplicationData(reference="4f1c", holder_name="KUAN WENG SAM LUZIA", account="kuan-ws", id_type="BIR",
                       id_number="1234567(8)", profile="cloud-signature-government",
                       emails=("kuan@example.mo", "luzia.kuan@example.mo"), organisation="DSAJ",
                       department="Legal", title="Chefe", old_serial="5E1A",
                       old_expires=datetime.datetime(2027, 1, 1, tzinfo=UTC),
                       agreed_at=datetime.datetime(2026, 12, 1, 9, 0, tzinfo=UTC))


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    return FontSource(tmp_path_factory.mktemp("ra-fonts")).face()


def to_unicode(pdf: bytes) -> str:
    """Every character the document's font maps (its ToUnicode CMap), as the hex a viewer reads."""
    reader = PdfFileReader(io.BytesIO(pdf))
    page = reader.root["/Pages"]["/Kids"][0]
    font = page["/Resources"]["/Font"]["/F1"]
    return font["/ToUnicode"].data.decode("ascii").lower()


def test_the_same_data_give_the_same_document(face):
    first = render(DATA, face)
    assert first.startswith(b"%PDF-") and render(DATA, face) == first
    assert render(replace(DATA, title="Director"), face) != first
    assert render(replace(DATA, agreed_at=DATA.agreed_at + datetime.timedelta(days=1)), face) != first


def test_the_document_is_in_chinese_portuguese_and_english(face):
    mapped = to_unicode(render(DATA, face))
    for char in "申請書雲簽署ãçW":  # the title and the certificate type; Portuguese; the holder
        assert f"{ord(char):04x}" in mapped, char
    assert profile_names("qualified-corporate") == ("合格證書（企業）", "certificado qualificado (empresa)",
                                                    "qualified certificate (corporate)")


def test_a_character_the_font_lacks_does_not_break_the_document(face):
    assert render(replace(DATA, holder_name="KUAN \U0001F600 LUZIA"), face).startswith(b"%PDF-")


def shaped(font_bytes: bytes, text: str) -> list[tuple[int, int, int, int]]:
    """``text`` as HarfBuzz shapes it with its default features, as pyHanko calls it: each glyph's
    cluster, advance and offsets."""
    import uharfbuzz as hb

    font = hb.Font(hb.Face(hb.Blob(font_bytes)))
    buffer = hb.Buffer()
    buffer.add_str(text)
    buffer.guess_segment_properties()
    hb.shape(font, buffer)
    return [(info.cluster, position.x_advance, position.x_offset, position.y_offset)
            for info, position in zip(buffer.glyph_infos, buffer.glyph_positions)]


def test_the_cut_face_sets_the_text_as_the_whole_face_does(face):
    # Kerning (AV, To), ligatures (fi, ffl), accents and the title's Chinese.
    text = "".join(TITLE) + " AVATAR To Tô fi ffl coração Direcção 關詠心 " + DATA.holder_name
    cut, present = _subset(face, text)
    assert set(text) <= present
    assert shaped(cut, text) == shaped(face.read_bytes(), text)


def test_a_configured_font_that_is_missing_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match="application_font"):
        FontSource(tmp_path, configured=tmp_path / "missing.otf").face()


def test_the_application_settings_are_read_relative_to_the_file(tmp_path):
    from signserver.ra.settings import load_settings

    config = tmp_path / "signserver.toml"
    config.write_text('[ra]\napplication_trust_roots = ["roots/eid.pem", "/etc/other.pem"]\n'
                      'application_client_cert = "clients/app.pem"\n', encoding="utf-8")
    settings = load_settings(config, environ={})
    assert settings.application_trust_roots == (tmp_path / "roots" / "eid.pem", Path("/etc/other.pem"))
    assert settings.application_client_files == (tmp_path / "clients" / "app.pem",
                                                  Path("var") / "clients" / "ra-application-key.pem")
    config.write_text("[ra]\napplication_trust_roots = 5\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="ra.application_trust_roots"):
        load_settings(config, environ={})
