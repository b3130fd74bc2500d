"""The stamp's font: one face of Debian's Noto Sans CJK collection, extracted once.

pyHanko's glyph accumulator cannot open a font collection (.ttc), which is how fonts-noto-cjk
ships; the Traditional Chinese face (which also covers Latin and Portuguese accents) is saved as a
single OpenType font under the state directory the first time it is needed.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from fontTools.ttLib import TTCollection, TTFont

from signserver.errors import ConfigurationError

log = logging.getLogger(__name__)

COLLECTIONS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"),
)
FACE = "Noto Sans CJK TC"
FILE_NAME = "NotoSansCJKtc-Regular.otf"


def stamp_font(state_dir: Path) -> Path:
    """The path of the extracted face, extracting it on first use.

    Raises: ConfigurationError: the CJK font collection is not installed.
    """
    target = state_dir / "fonts" / FILE_NAME
    if target.is_file():
        return target
    source = next((c for c in COLLECTIONS if c.is_file()), None)
    if source is None:
        raise ConfigurationError("fonts", "the Noto Sans CJK fonts are missing; install fonts-noto-cjk "
                                          "(make installs it)")
    collection = TTCollection(str(source), lazy=True)
    face = next((f for f in collection.fonts if f["name"].getDebugName(1) == FACE), None)
    if face is None:
        raise ConfigurationError("fonts", f"{source} has no {FACE!r} face")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    face.save(str(partial))
    partial.rename(target)  # never leave a half-written font behind
    log.info("extracted the stamp font %r to %s", FACE, target)
    return target


@functools.lru_cache(maxsize=4)
def characters(font: Path) -> frozenset[int]:
    """The code points the font can draw (read once per font)."""
    with TTFont(str(font), lazy=True) as parsed:
        return frozenset(parsed.getBestCmap())
