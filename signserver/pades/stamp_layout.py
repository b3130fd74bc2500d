"""The size of the stamp's text: the largest that fits the stamp's box, within readable bounds.

Lines are set on a pitch of at least 1.2 times the font size: set solid (pitch equal to the size), the
descender of a Latin "g" runs into the CJK ideograph of the line below, whose outlines fill the
whole em. The size is measured with the font's own advances (the stamp font has no kerning or
other OpenType layout, so a line's width is the sum of its glyphs' advances) and chosen in whole
points, as the text operators draw it. pyHanko lays a text box out in whole points too (it
computes aspect ratios as fractions of the sizes): the pitch and the margins are whole points.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from fontTools.ttLib import TTFont

from signserver.errors import InvalidArgument

MIN_FONT_SIZE = 6  # below this, a printed stamp is no longer read comfortably
MAX_FONT_SIZE = 24  # above this, a stamp shouts over the page it sits on
LEADING = (6, 5)  # the line pitch is at least 6/5 of the font size, rounded up to a whole point
PADDING = 4  # between the box's edge (and its border) and the text, in points


@dataclass(frozen=True)
class TextFit:
    """The chosen font size and line pitch, and the room the text then takes (in points)."""

    font_size: int
    leading: int
    width: float  # of the widest line
    height: float  # of every line's pitch together
    # How far to raise the lines in their box: pyHanko sets the first baseline one pitch below
    # the top, which leaves the whole extra leading above the text; raised by this, half of it
    # sits above the first line's ascenders and half below the last line's baseline.
    raise_by: int


@dataclass(frozen=True)
class _Advances:
    per_code_point: dict[int, int]
    missing: int  # the advance of .notdef, which a character the font lacks is drawn with
    units_per_em: int
    ascender: int


@functools.lru_cache(maxsize=64)
def _advances(font: Path) -> _Advances:
    """The font's advance widths (read once per font: a stamp's subset never changes)."""
    with TTFont(str(font), lazy=True) as parsed:
        metrics = parsed["hmtx"].metrics
        per_code_point = {code: metrics[glyph][0] for code, glyph in parsed.getBestCmap().items()}
        return _Advances(per_code_point, metrics[parsed.getGlyphOrder()[0]][0], parsed["head"].unitsPerEm,
                         parsed["OS/2"].sTypoAscender)


def line_width(line: str, font: Path, font_size: float) -> float:
    """The width of ``line`` drawn with ``font`` at ``font_size``, in points."""
    advances = _advances(font)
    units = sum(advances.per_code_point.get(ord(c), advances.missing) for c in line)
    return units * font_size / advances.units_per_em


def fit_stamp(lines: list[str], font: Path, box_width: float, box_height: float,
              reserved_width: float = 0.0) -> TextFit:
    """The largest whole-point size, from MIN_FONT_SIZE to MAX_FONT_SIZE, at which every line
    fits the width and the lines' pitches together fit the height of a stamp box of
    ``box_width`` x ``box_height`` points, less the padding and ``reserved_width`` points beside
    the text (a QR code's square).

    Raises: InvalidArgument: the box is too small for the text at MIN_FONT_SIZE (the message
        names the box, the minimum size and the room the text needs then).
    """
    free_width = box_width - reserved_width - 2 * PADDING
    free_height = box_height - 2 * PADDING
    widest_em = max(line_width(line, font, 1.0) for line in lines)
    advances = _advances(font)
    ascender_em = advances.ascender / advances.units_per_em
    for size in range(MAX_FONT_SIZE, MIN_FONT_SIZE - 1, -1):
        fit = _at(size, widest_em, len(lines), ascender_em)
        if fit.width <= free_width and fit.height <= free_height:
            return fit
    smallest = _at(MIN_FONT_SIZE, widest_em, len(lines), ascender_em)
    needed_width = smallest.width + reserved_width + 2 * PADDING
    needed_height = smallest.height + 2 * PADDING
    raise InvalidArgument(
        f"the stamp box ({box_width:g} x {box_height:g} pt) is too small for its text: at the smallest "
        f"readable size, {MIN_FONT_SIZE} pt, the text needs a box of {needed_width:.0f} x {needed_height:.0f} pt; "
        "give a larger box or shorter text")


def _at(size: int, widest_em: float, line_count: int, ascender_em: float) -> TextFit:
    leading = -(-size * LEADING[0] // LEADING[1])
    half_leading = (leading - size) / 2
    return TextFit(font_size=size, leading=leading, width=widest_em * size, height=leading * line_count,
                   raise_by=round(leading - half_leading - ascender_em * size))
