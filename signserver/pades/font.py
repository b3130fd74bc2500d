"""The stamp's font: one face of Debian's Noto Sans CJK collection, extracted once.

pyHanko's glyph accumulator cannot open a font collection (.ttc), which is how fonts-noto-cjk
ships; the Traditional Chinese face (which also covers Latin and Portuguese accents) is saved as a
single OpenType font under the state directory the first time it is needed.

That face has 65,000 glyphs and pyHanko parses the font it is given for every document (about
0.35 s here). So each stamp gets a font cut down to the characters it can contain (its text plus
every digit and sign a time can show), made once per character set, by a short-lived process,
and kept on disk: signing again for the same holder and caption parses a font of a few dozen
glyphs, and no server process ever holds the whole face.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fontTools import subset
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
    _save_atomically(face, target)
    log.info("extracted the stamp font %r to %s", FACE, target)
    return target


ALWAYS = frozenset(" 0123456789.:+-/()年月日")  # whatever a formatted time can contain


def font_for_text(font: Path, lines: list[str]) -> Path:
    """A subset of ``font`` with the characters of ``lines`` (and every time character), made once
    per character set under ``fonts/subsets`` beside the face.

    The subset is made by a short-lived process of its own: parsing the 16 MB face costs some
    40 MB of memory, which a long-running server process would otherwise keep.

    Raises: ConfigurationError: the subset could not be made.
    """
    wanted = "".join(sorted(ALWAYS.union(*map(set, lines))))
    key = hashlib.sha256(wanted.encode("utf-8")).hexdigest()[:32]
    target = font.parent / "subsets" / f"{key}.otf"
    if not target.is_file():
        result = subprocess.run([sys.executable, "-m", "signserver.pades.font", str(font), str(target)],
                                input=wanted, text=True, capture_output=True, timeout=120)
        if result.returncode != 0 or not target.is_file():
            raise ConfigurationError("fonts", f"cannot make a stamp font: {result.stderr.strip()[-300:]}")
    return target


def make_subset(font: Path, wanted: str, target: Path) -> None:
    """Write the subset of ``font`` holding the characters ``wanted`` to ``target``."""
    options = subset.Options()
    # Horizontal Chinese and Latin text needs no OpenType layout; without GSUB/GPOS the subset
    # is small, and parsing it again for every document is cheap.
    options.layout_features = []
    options.hinting = False
    options.desubroutinize = True
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    with TTFont(str(font)) as parsed:
        subsetter.populate(unicodes=[ord(c) for c in wanted if ord(c) in parsed.getBestCmap()])
        subsetter.subset(parsed)
        _save_atomically(parsed, target)


def _save_atomically(font: TTFont, target: Path) -> None:
    """Write to a file of this call's own, then rename: concurrent threads and worker processes
    may make the same font at once, and a reader never sees half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as partial:
        font.save(partial)
    os.replace(partial.name, target)


@functools.lru_cache(maxsize=256)
def characters(font: Path) -> frozenset[int]:
    """The code points the font can draw (read once per font)."""
    with TTFont(str(font), lazy=True) as parsed:
        return frozenset(parsed.getBestCmap())


if __name__ == "__main__":  # python -m signserver.pades.font FACE TARGET < characters
    make_subset(Path(sys.argv[1]), sys.stdin.read(), Path(sys.argv[2]))
