"""The visible stamp, like the documents' sample: holder name, caption, and the signing time as
``2017.05.23 10:26:06 +0800``; optionally a reason, a location, a QR code, a seal image."""

from __future__ import annotations

import datetime
import functools
import io
import zlib
import zoneinfo
from dataclasses import dataclass, replace
from pathlib import Path

from fontTools.ttLib import TTFont
from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.font.opentype import CIDFontType0, GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import QRStampStyle, TextStampStyle

from signserver.clock import time_zone
from signserver.errors import InvalidArgument
from signserver.pades.font import characters, font_for_text
from signserver.pades.pdfa import cid_set, cids_in_program
from signserver.pades.stamp_layout import PADDING, TextFit, fit_stamp

CAPTIONS = {"pt": "Assinatura digital", "zh": "數碼簽署", "en": "Digital signature"}
DEFAULT_BOX = (36.0, 36.0, 276.0, 108.0)  # bottom-left, in points
MAX_TEXT = 200
# A seal drawn in a stamp's box needs a few hundred pixels a side; an image of one colour
# compresses to almost nothing, and 8000 x 8000 pixels in 200 KB cost a worker 385 MB to draw.
MAX_SEAL_PIXELS = 4_000_000
SEAL_FIELD = "seal_image"  # as gRPC's Stamp names it; the CSC front names it again
URL_FIELD = "verification_url"  # likewise
PAGE_FIELD = "page"  # likewise
FIELD_NAME_FIELD = "field_name"  # likewise
BOX_FIELD = "x1"  # gRPC's Stamp gives the rectangle as x1, y1, x2, y2: its first names it; CSC's is "box"
TIME_ZONE_FIELD = "time_zone"  # CSC's is "timeZone"


@dataclass(frozen=True)
class StampOptions:
    visible: bool = True
    caption: str = CAPTIONS["pt"]
    time_zone: str = "Asia/Macau"
    reason: str = ""
    location: str = ""
    verification_url: str = ""  # adds a QR code to this address
    seal_png: bytes | None = None  # an image behind the text
    field_name: str = ""  # an existing empty signature field, or a new field's name
    page: int = -1  # 0-based; -1 is the last page
    box: tuple[float, float, float, float] = DEFAULT_BOX  # the text's size follows the box's

    def zone(self) -> zoneinfo.ZoneInfo:
        """Raises: InvalidArgument: unknown time zone."""
        zone = time_zone(self.time_zone)
        if zone is None:
            raise InvalidArgument(f"unknown time zone {self.time_zone[:MAX_TEXT]!r}", field=TIME_ZONE_FIELD)
        return zone


# The options that become text in the PDF, by the names gRPC's Stamp gives them.
_TEXT_FIELDS = ("caption", "reason", "location", "verification_url", "field_name")


def refuse_unencodable(options: StampOptions) -> None:
    """Refuse stamp text that holds half of a UTF-16 surrogate pair: JSON lets a client send one
    ("\\ud800"), but no PDF string, font or QR code can hold it.

    Raises: InvalidArgument (field: the option's name).
    """
    for name in _TEXT_FIELDS:
        value = getattr(options, name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"the stamp's {name} is not text: it holds U+{ord(value[exc.start]):04X}, half of "
                                  "a UTF-16 surrogate pair", field=name) from None


def format_time(moment: datetime.datetime, zone: zoneinfo.ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y.%m.%d %H:%M:%S %z")


def stamp_lines(holder: str, options: StampOptions, moment: datetime.datetime) -> list[str]:
    lines = [holder, options.caption, format_time(moment, options.zone())]
    if options.reason:
        lines.append(options.reason)
    if options.location:
        lines.append(options.location)
    return lines


def check_text(lines: list[str], font: Path) -> Path:
    """The font to draw ``lines`` with (a subset of ``font``).

    Raises: InvalidArgument: too long, or with a character the font cannot draw.
    """
    for line in lines:
        if len(line) > MAX_TEXT:
            raise InvalidArgument(f"a stamp line has at most {MAX_TEXT} characters")
    subset = font_for_text(font, lines)
    drawable = characters(subset)  # the subset keeps exactly the characters the face can draw
    for line in lines:
        # Only the space is left to the layout; any other blank (a tab, a form feed, U+0085)
        # is a character the face must draw, or signing fails on it.
        missing = sorted({c for c in line if ord(c) not in drawable and c != " "})
        if missing:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:5])
            raise InvalidArgument(f"the stamp font cannot draw {shown}")
    return subset


class _PresubsetAccumulator(GlyphAccumulator):
    """pyHanko's glyph accumulator for a font that font_for_text already cut down: subsetting it
    again for every document would only repeat that work, and so would compiling its font
    program, which is the same for every document drawn with that subset."""

    def __init__(self, *, program: bytes, **kwargs):
        super().__init__(**kwargs)
        if isinstance(self.cidfont_obj, CIDFontType0):
            base_name = self.cidfont_obj.name.split("+", 1)[1]
            self.cidfont_obj = _CompiledCidFont(self.tt, base_name, self.subset_prefix, program)

    def _extract_subset(self, options=None) -> None:
        return None


class _CompiledCidFont(CIDFontType0):
    """A CFF CIDFont whose program (compiled and compressed once per subset) is embedded as is."""

    def __init__(self, tt, base_ps_name: str, subset_prefix: str, program: bytes):
        super().__init__(tt, base_ps_name, subset_prefix)
        self._program = program

    def set_font_file(self, writer):
        stream = generic.StreamObject({pdf_name("/Subtype"): pdf_name("/CIDFontType0C"),
                                       pdf_name("/Filter"): pdf_name("/FlateDecode")}, encoded_data=self._program)
        reference = writer.add_object(stream)
        self._font_descriptor[pdf_name("/FontFile3")] = reference
        # PDF/A-1 (ISO 19005-1 6.3.5) wants a subset CIDFont to list the CIDs its program holds.
        held = cids_in_program(list(self.cff[0].charset), self.use_raw_gids)
        self._font_descriptor[pdf_name("/CIDSet")] = writer.add_object(generic.StreamObject(stream_data=cid_set(held)))
        return reference


@functools.lru_cache(maxsize=64)
def _font_program(subset: str) -> bytes:
    """The subset's CFF font program, compiled and Flate-compressed (once per subset file: the
    files are named after their characters and never change)."""
    with TTFont(subset) as parsed:
        compiled = io.BytesIO()
        parsed["CFF "].cff.compile(compiled, parsed)
    return zlib.compress(compiled.getvalue())


@dataclass(frozen=True)
class _PresubsetFontFactory(GlyphAccumulatorFactory):
    def create_font_engine(self, writer, obj_stream=None) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs and self.create_objstream_if_needed:
            obj_stream = writer.prepare_object_stream()
        with open(self.font_file, "rb") as handle:
            return _PresubsetAccumulator(writer=writer, font_handle=io.BytesIO(handle.read()),
                                         font_size=self.font_size, obj_stream=obj_stream,
                                         program=_font_program(self.font_file))


def stamp_style(lines: list[str], options: StampOptions, subset: Path) -> TextStampStyle:
    """A pyHanko style whose text is already final (no placeholders left to interpret), drawn
    with ``subset`` (from :func:`check_text`) at the size that fits the box it is drawn in.

    Raises: InvalidArgument: the seal image is unreadable or too large (:func:`seal_image`), the
        verification address more than a QR code holds (:func:`check_verification_url`). When
        the stamp is drawn: InvalidArgument if its box is too small for the text (see
        signserver.pades.stamp_layout.fit_stamp).
    """
    text = "\n".join(line.replace("%", "%%") for line in lines)
    # The size is chosen when pyHanko knows the box (an existing field's, or the requested one);
    # until then the style holds the text's own layout rule and no size of its own.
    box_style = TextBoxStyle(font=_PresubsetFontFactory(str(subset)),
                             box_layout_rule=layout.SimpleBoxLayoutRule(
                                 x_align=layout.AxisAlignment.ALIGN_MID, y_align=layout.AxisAlignment.ALIGN_MID,
                                 margins=layout.Margins.uniform(PADDING),
                                 inner_content_scaling=layout.InnerScaling.NO_SCALING))
    background = seal_image(options.seal_png) if options.seal_png else None
    if options.verification_url:
        check_verification_url(options.verification_url)
    common = dict(stamp_text=text, text_box_style=box_style, background=background, border_width=1,
                  background_opacity=0.3, lines=tuple(lines), font_file=str(subset))
    if options.verification_url:
        return _FittedQRStampStyle(**common)
    return _FittedTextStampStyle(**common)


def check_verification_url(url: str) -> None:
    """Refuse ``url`` if a QR code cannot hold it, as pyHanko draws one (error correction level M:
    about 2,300 bytes of UTF-8, so a limit in characters does not bound it). pyHanko finds out
    only when it draws the stamp, after the holder's activation token is spent.

    Raises: InvalidArgument (field verification_url): too long for a QR code.
    """
    import qrcode
    from qrcode.exceptions import DataOverflowError

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(url)
    try:
        code.best_fit()
    except (DataOverflowError, ValueError):  # ValueError: its version search runs past the last one
        size = len(url.encode("utf-8", "surrogatepass"))
        raise InvalidArgument(f"the verification address is too long for a QR code: {size:,} bytes of UTF-8, "
                              "where a QR code holds about 2,300",
                              field=URL_FIELD) from None


def seal_image(data: bytes) -> PdfImage:
    """The seal image ``data`` (PNG or JPEG), its size read from its header before it is decoded,
    then decoded whole, in a mode pyHanko draws.

    Raises: InvalidArgument (field seal_image): not a readable image, one of more than
        MAX_SEAL_PIXELS pixels, or one whose pixel data cannot be decoded (truncated, corrupt).
    """
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Exception:  # Pillow raises several kinds for a bad image
        raise InvalidArgument("the seal image is not a readable PNG or JPEG", field=SEAL_FIELD) from None
    if image.width * image.height > MAX_SEAL_PIXELS:
        raise InvalidArgument(f"the seal image has {image.width} x {image.height} pixels; at most "
                              f"{MAX_SEAL_PIXELS:,} are drawn", field=SEAL_FIELD)
    try:
        # pyHanko decodes the pixels only when it draws the stamp, after the holder's activation
        # token is spent, and draws only some modes: decode and convert while a refusal costs nothing.
        image.load()
        return PdfImage(_drawable(image))
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidArgument(f"the seal image cannot be decoded: {detail[:200]}", field=SEAL_FIELD) from None


def _drawable(image):
    """``image`` in a mode pyHanko draws: L (grey) or RGB, with A when it has transparency."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        # Pillow converts 16-bit grey to 8 bits by clipping (a gradient comes out white): keep the
        # high byte instead.
        image = image.convert("I").point(lambda value: value * (1 / 256))
    mode = "L" if Image.getmodebase(image.mode) == "L" else "RGB"
    mode += "A" if image.has_transparency_data else ""
    return image if image.mode == mode else image.convert(mode)


@dataclass(frozen=True)
class _FittedTextStampStyle(TextStampStyle):
    """A text stamp whose font size and leading are fitted to the box it is drawn in."""

    lines: tuple[str, ...] = ()
    font_file: str = ""

    def create_stamp(self, writer, box: layout.BoxConstraints, text_params: dict):
        """Raises: InvalidArgument: the box is too small for the text."""
        fit = fit_stamp(list(self.lines), Path(self.font_file), box.width, box.height)
        return TextStampStyle.create_stamp(_sized(self, fit), writer, box, text_params)


@dataclass(frozen=True)
class _FittedQRStampStyle(QRStampStyle):
    """A QR stamp whose text is fitted to the room beside the code: pyHanko draws the code as a
    square as high as the box (or as wide, in a box taller than wide) on the text's left."""

    lines: tuple[str, ...] = ()
    font_file: str = ""

    def create_stamp(self, writer, box: layout.BoxConstraints, text_params: dict):
        """Raises: InvalidArgument: the box is too small for the text beside the code."""
        fit = fit_stamp(list(self.lines), Path(self.font_file), box.width, box.height,
                        reserved_width=min(box.width, box.height))
        return QRStampStyle.create_stamp(_sized(self, fit), writer, box, text_params)


def _sized(style: TextStampStyle, fit: TextFit) -> TextStampStyle:
    """``style`` drawn at the fitted size and pitch, its lines raised by the fit's amount (the
    margins move, their sum stays: the text box keeps its size)."""
    text = style.text_box_style
    rule = text.box_layout_rule
    margins = layout.Margins(left=PADDING, right=PADDING, top=PADDING - fit.raise_by, bottom=PADDING + fit.raise_by)
    return replace(style, text_box_style=replace(
        text, font=replace(text.font, font_size=fit.font_size), font_size=fit.font_size, leading=fit.leading,
        box_layout_rule=replace(rule, margins=margins)))
