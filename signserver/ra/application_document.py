"""The renewal's application document: a one-page PDF in Traditional Chinese with Portuguese and
English beside it, made from the renewal's data and the declaration the holder signs.

Deterministic: the same data give the same bytes (a fixed document id, no dates of its own, font
subsets named from their content), so the document's SHA-256 stands for what it says.

The font is one face of a CJK collection (Debian's fonts-noto-cjk ships .ttc files, which pyHanko
cannot open): the Traditional Chinese face is extracted once under the state directory. That face
is 16 MB; each document gets a subset cut to its own characters before pyHanko sees it, so only
the small subset is parsed and shaped.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from signserver.ra.errors import SettingsError
from signserver.ra.messages import DISPLAY_ZONE  # Macau time (UTC+8, no daylight saving)

log = logging.getLogger(__name__)

COLLECTIONS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"),
)
FACE = "Noto Sans CJK TC"
FACE_FILE = "NotoSansCJKtc-Regular.otf"

PAGE_WIDTH, PAGE_HEIGHT = 595.0, 842.0  # A4, in points
MARGIN = 56.0
TEXT_SIZE = 9.5
TITLE_SIZE = 15.0

PROFILE_NAMES = {
    "cloud-signature": ("雲簽署賬戶證書", "certificado de conta de assinatura na nuvem", "cloud-signature account certificate"),
    "qualified": ("合格證書", "certificado qualificado", "qualified certificate"),
    "standard": ("標準證書", "certificado normal", "standard certificate"),
    "encryption": ("加密證書", "certificado de cifragem", "encryption certificate"),
}
VARIANTS = {"government": ("政府", "governo", "government"), "corporate": ("企業", "empresa", "corporate")}

TITLE = ("電子證書續期申請書", "Pedido de renovação de certificado electrónico",
         "Application for the renewal of an electronic certificate")
DECLARATION = (
    "本人聲明上述資料真實、正確及完整，已閱讀並接受申請人／訂戶協議，現申請續期上述電子證書，並以電子簽名簽署本申請書。",
    "Declaro que os dados acima são verdadeiros, correctos e completos, que li e aceito o acordo do "
    "requerente/subscritor, e requeiro a renovação do certificado electrónico acima indicado, assinando "
    "este pedido com assinatura electrónica.",
    "I declare that the data above are true, correct and complete, that I have read and accept the "
    "applicant/subscriber agreement, and I apply for the renewal of the electronic certificate above, "
    "signing this application electronically.",
)


@dataclass(frozen=True)
class ApplicationData:
    """What the application document says: the holder, the certificate renewed and the agreement."""
    reference: str  # the renewal's id
    holder_name: str
    account: str
    id_type: str
    id_number: str
    profile: str
    emails: tuple[str, ...]
    organisation: str
    department: str
    title: str
    old_serial: str
    old_expires: datetime.datetime
    agreed_at: datetime.datetime


def profile_names(profile: str) -> tuple[str, str, str]:
    """The certificate type in Chinese, Portuguese and English (the profile's name when unknown)."""
    kind, _, variant = profile.rpartition("-")
    names, variant_names = PROFILE_NAMES.get(kind), VARIANTS.get(variant)
    if names is None or variant_names is None:
        return profile, profile, profile
    return (f"{names[0]}（{variant_names[0]}）", f"{names[1]} ({variant_names[1]})", f"{names[2]} ({variant_names[2]})")


def _day(moment: datetime.datetime) -> str:
    return moment.astimezone(DISPLAY_ZONE).strftime("%Y-%m-%d")


def rows(data: ApplicationData) -> list[tuple[str, str]]:
    """The document's fields: a trilingual label and the value."""
    zh, pt, en = profile_names(data.profile)
    return [
        ("申請編號 / N.º do pedido / Reference", data.reference),
        ("持有人姓名 / Nome do titular / Holder", data.holder_name),
        ("賬戶 / Conta / Account", data.account),
        ("身份證明文件 / Documento de identificação / Identity document", f"{data.id_type} {data.id_number}"),
        ("證書類型 / Tipo de certificado / Certificate type", f"{zh} / {pt} / {en}"),
        ("電子郵箱 / Correio electrónico / E-mail", ", ".join(data.emails) or "-"),
        ("機構 / Entidade / Organisation", data.organisation or "-"),
        ("部門 / Departamento / Department", data.department or "-"),
        ("職位 / Cargo / Title", data.title or "-"),
        ("現有證書序號 / N.º de série do certificado actual / Current certificate serial", data.old_serial),
        ("現有證書有效期至 / Validade do certificado actual / Current certificate valid until",
         _day(data.old_expires)),
        ("接受申請人／訂戶協議日期 / Acordo do requerente/subscritor aceite em / Agreement accepted on",
         _day(data.agreed_at)),
    ]


class FontSource:
    """The CJK face the documents are set in: ``configured`` (an OpenType/TrueType file), else the
    Traditional Chinese face of the system's Noto Sans CJK collection, extracted once to
    ``<state_dir>/ra/fonts``."""

    def __init__(self, state_dir: Path, configured: Path | None = None):
        self._state_dir = state_dir
        self._configured = configured
        self._lock = threading.Lock()

    def face(self) -> Path:
        """Raises: SettingsError: no configured font, and the CJK collection is not installed."""
        if self._configured is not None:
            if not self._configured.is_file():
                raise SettingsError(f"ra.application_font: no font file at {self._configured}")
            return self._configured
        target = self._state_dir / "ra" / "fonts" / FACE_FILE
        with self._lock:
            if not target.is_file():
                self._extract(target)
        return target

    @staticmethod
    def _extract(target: Path) -> None:
        from fontTools.ttLib import TTCollection

        source = next((c for c in COLLECTIONS if c.is_file()), None)
        if source is None:
            raise SettingsError("ra.application_font: no CJK font; install fonts-noto-cjk or configure one")
        face = next((f for f in TTCollection(str(source), lazy=True).fonts if f["name"].getDebugName(1) == FACE),
                    None)
        if face is None:
            raise SettingsError(f"ra.application_font: {source} has no {FACE!r} face")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        os.close(handle)
        face.save(temporary)
        os.replace(temporary, target)
        log.info("extracted the application font %r to %s", FACE, target)


def _subset(face: Path, text: str) -> tuple[bytes, frozenset[str]]:
    """The face cut to the characters of ``text`` it has (deterministic for the same characters),
    and those characters."""
    from fontTools import subset

    options = subset.Options()
    # fontTools' default layout features are those shapers apply unasked (HarfBuzz, as pyHanko
    # calls it, applies no other): the face's others (vertical forms, proportional CJK widths) only
    # cost the cut, 0.37 s instead of 0.57 s of CPU for a document.
    options.name_IDs = ["*"]
    font = subset.load_font(str(face), options, lazy=True)
    mapped = font.getBestCmap()
    present = frozenset(c for c in set(text) if ord(c) in mapped)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted(present | {"?"})))
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue(), present


def render(data: ApplicationData, face: Path) -> bytes:
    """The application document as PDF bytes: the same for the same ``data`` and font.

    Raises: SettingsError: the font cannot be read.
    """
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulator
    from pyhanko.pdf_utils.generic import pdf_name
    from pyhanko.pdf_utils.writer import PageObject

    signature_line = f"申請人簽名 / Assinatura do requerente / Applicant's signature: {data.holder_name}"
    everything = "".join(TITLE) + "".join(DECLARATION) + signature_line + "".join(
        label + value for label, value in rows(data))
    try:
        font_bytes, present = _subset(face, everything + "?")
    except Exception as exc:  # fontTools raises many kinds on an unreadable font
        raise SettingsError(f"ra.application_font: cannot read {face}: {type(exc).__name__}") from None

    def shown(text: str) -> str:  # a character the font lacks would break the shaping: "?" instead
        return "".join(c if c in present or c.isspace() else "?" for c in text)

    fields = [(shown(label), shown(value)) for label, value in rows(data)]
    digest = hashlib.sha256(repr(data).encode("utf-8") + hashlib.sha256(font_bytes).digest()).digest()

    writer = _deterministic_writer(digest, data.agreed_at)
    font = GlyphAccumulator(writer, io.BytesIO(font_bytes), font_size=TEXT_SIZE)
    content = _Content(font)
    y = PAGE_HEIGHT - MARGIN
    for index, line in enumerate(TITLE):
        size = TITLE_SIZE if index == 0 else TEXT_SIZE + 1.5
        y -= size * 1.4
        content.text(MARGIN, y, line, size)
    y -= 14
    content.rule(MARGIN, y, PAGE_WIDTH - MARGIN)
    width = PAGE_WIDTH - 2 * MARGIN
    for label, value in fields:
        y -= 6
        for line in content.wrap(label, TEXT_SIZE - 1.5, width):
            y -= (TEXT_SIZE - 1.5) * 1.35
            content.text(MARGIN, y, line, TEXT_SIZE - 1.5, grey=True)
        for line in content.wrap(value, TEXT_SIZE, width - 12):
            y -= TEXT_SIZE * 1.4
            content.text(MARGIN + 12, y, line, TEXT_SIZE)
    y -= 10
    content.rule(MARGIN, y, PAGE_WIDTH - MARGIN)
    y -= 6
    for paragraph in map(shown, DECLARATION):
        y -= 4
        for line in content.wrap(paragraph, TEXT_SIZE, width):
            y -= TEXT_SIZE * 1.45
            content.text(MARGIN, y, line, TEXT_SIZE)
    y -= 28
    content.text(MARGIN, y, shown(signature_line), TEXT_SIZE)
    stream = writer.add_object(generic.StreamObject(stream_data=content.bytes()))
    resources = generic.DictionaryObject({pdf_name("/Font"): generic.DictionaryObject(
        {pdf_name("/F1"): font.as_resource()})})
    writer.insert_page(PageObject(stream, (0, 0, PAGE_WIDTH, PAGE_HEIGHT), resources))
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def _deterministic_writer(digest: bytes, modified: datetime.datetime):
    """A pyHanko writer whose output depends on the content alone: where pyHanko draws a random
    document id and font subset tag and stamps the time of writing, these come from ``digest``
    and ``modified`` (pyHanko's private hooks, pinned with its version in pyproject.toml)."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.font.api import FontSubsetCollection
    from pyhanko.pdf_utils.generic import pdf_name
    from pyhanko.pdf_utils.writer import PdfFileWriter

    tag = "".join(chr(ord("A") + b % 26) for b in digest[:6])

    class Subsets(FontSubsetCollection):
        def add_subset(self) -> str:
            return tag

    class Writer(PdfFileWriter):
        def __init__(self):
            super().__init__()
            self._document_id = generic.ArrayObject([generic.ByteStringObject(digest[:16])] * 2)

        def get_subset_collection(self, base_postscript_name: str):
            if base_postscript_name not in self._font_resources:
                self._font_resources[base_postscript_name] = Subsets(base_postscript_name)
            return self._font_resources[base_postscript_name]

        def _update_meta(self):
            stamp = modified.astimezone(datetime.timezone.utc).strftime("D:%Y%m%d%H%M%SZ")
            self._info = self.add_object(generic.DictionaryObject({
                pdf_name("/ModDate"): generic.TextStringObject(stamp),
                pdf_name("/Producer"): generic.TextStringObject("signserver RA"),
            }))

    return Writer()


class _Content:
    """A page's content stream: lines of text in the one font, and rules."""

    def __init__(self, font):
        self._font = font
        self._ops: list[bytes] = []

    def width(self, text: str, size: float) -> float:
        return self._font.shape(text, with_actual_text=False).x_advance * size

    def wrap(self, text: str, size: float, width: float) -> list[str]:
        """``text`` in lines no wider than ``width``: Latin text breaks at spaces, CJK anywhere."""
        lines, line = [], ""
        for token in _tokens(text):
            candidate = line + token
            if line and self.width(candidate.rstrip(), size) > width:
                lines.append(line.rstrip())
                line = token.lstrip()
            else:
                line = candidate
        if line.strip():
            lines.append(line.rstrip())
        return lines or [""]

    def text(self, x: float, y: float, text: str, size: float, grey: bool = False) -> None:
        shaped = self._font.shape(text)
        colour = b"0.35 g" if grey else b"0 g"
        self._ops.append(b"BT " + colour + f" /F1 {size:.2f} Tf {x:.2f} {y:.2f} Td ".encode("ascii")
                         + shaped.graphics_ops + b" ET")

    def rule(self, x1: float, y: float, x2: float) -> None:
        self._ops.append(f"0.6 G 0.5 w {x1:.2f} {y:.2f} m {x2:.2f} {y:.2f} l S".encode("ascii"))

    def bytes(self) -> bytes:
        return b"\n".join(self._ops)


def _tokens(text: str) -> list[str]:
    """Break opportunities: each CJK character alone, a Latin word with the space after it."""
    tokens, word = [], ""
    for char in text:
        if ord(char) >= 0x2E80:
            if word:
                tokens.append(word)
                word = ""
            tokens.append(char)
        else:
            word += char
            if char == " ":
                tokens.append(word)
                word = ""
    if word:
        tokens.append(word)
    return tokens
