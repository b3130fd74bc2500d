"""The visible stamp, like the documents' sample: holder name, caption, and the signing time as
``2017.05.23 10:26:06 +0800``; optionally a reason, a location, a QR code, a seal image."""

from __future__ import annotations

import datetime
import functools
import io
import zlib
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from fontTools.ttLib import TTFont
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import CIDFontType0, GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import QRStampStyle, TextStampStyle

from signserver.errors import InvalidArgument
from signserver.pades.font import characters, font_for_text

CAPTIONS = {"pt": "Assinatura digital", "zh": "數碼簽署", "en": "Digital signature"}
DEFAULT_BOX = (36.0, 36.0, 276.0, 108.0)  # bottom-left, in points
MAX_TEXT = 200


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
    box: tuple[float, float, float, float] = DEFAULT_BOX
    font_size: int = 10

    def zone(self) -> zoneinfo.ZoneInfo:
        """Raises: InvalidArgument: unknown time zone."""
        try:
            return zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(f"unknown time zone {self.time_zone!r}") from None


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
        missing = sorted({c for c in line if ord(c) not in drawable and not c.isspace()})
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
    with ``subset`` (from :func:`check_text`)."""
    text = "\n".join(line.replace("%", "%%") for line in lines)
    box_style = TextBoxStyle(font=_PresubsetFontFactory(str(subset), font_size=options.font_size))
    background = None
    if options.seal_png:
        try:
            from PIL import Image

            background = PdfImage(Image.open(io.BytesIO(options.seal_png)))
        except Exception:  # Pillow raises several kinds for a bad image
            raise InvalidArgument("the seal image is not a readable PNG or JPEG") from None
    if options.verification_url:
        return QRStampStyle(stamp_text=text, text_box_style=box_style, background=background,
                            border_width=1, background_opacity=0.3)
    return TextStampStyle(stamp_text=text, text_box_style=box_style, background=background, border_width=1,
                          background_opacity=0.3)
