"""The stamp's font: one face of Debian's Noto Sans CJK collection, extracted once.

pyHanko's glyph accumulator cannot open a font collection (.ttc), which is how fonts-noto-cjk
ships; the Traditional Chinese face (which also covers Latin and Portuguese accents) is saved as a
single OpenType font under the state directory the first time it is needed.

That face has 65,000 glyphs and pyHanko parses the font it is given for every document (about
0.35 s here). So each stamp gets a font cut down to the characters it can contain (its text plus
every digit and sign a time can show), made once per character set, by a short-lived process,
and kept on disk: signing again for the same holder and caption parses a font of a few dozen
glyphs, and no server process ever holds the whole face.

Any application can ask for a stamp of any text, so the kept subsets are bounded: at most
MAX_SUBSETS files and MAX_SUBSET_BYTES bytes (a subset of a caption in Chinese takes about 150 kB,
one of Latin text a few kB), the least recently used going first when a new one is made; a use
marks a subset's file (its modification time). A subset used within IN_USE_SECONDS is never
removed, so that a signing between taking a subset's path and opening it finds it; the bound may
be passed by the subsets made within that time. The files are shared by every worker of the node:
each is written atomically, and removing one another process has open takes nothing from it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
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

MAX_SUBSETS = 1000
MAX_SUBSET_BYTES = 64 * 1024 * 1024
# Longer than any signing takes between choosing its stamp's font and drawing the stamp.
IN_USE_SECONDS = 300
# A subset being written is renamed into place within the subset process's timeout (120 s): a
# part this old was left by a process that was killed.
PARTIAL_SECONDS = 600


def font_for_text(font: Path, lines: list[str]) -> Path:
    """A subset of ``font`` with the characters of ``lines`` (and every time character), made once
    per character set under ``fonts/subsets`` beside the face, and kept while it is among the
    recently used (see :func:`prune_subsets`).

    The subset is made by a short-lived process of its own: parsing the 16 MB face costs some
    40 MB of memory, which a long-running server process would otherwise keep.

    Raises: ConfigurationError: the subset could not be made.
    """
    wanted = "".join(sorted(ALWAYS.union(*map(set, lines))))
    key = hashlib.sha256(wanted.encode("utf-8")).hexdigest()[:32]
    target = font.parent / "subsets" / f"{key}.otf"
    if _mark_used(target):
        return target
    result = subprocess.run([sys.executable, "-m", "signserver.pades.font", str(font), str(target)],
                            input=wanted, text=True, capture_output=True, timeout=120)
    if result.returncode != 0 or not target.is_file():
        raise ConfigurationError("fonts", f"cannot make a stamp font: {result.stderr.strip()[-300:]}")
    prune_subsets(target.parent, keep=target)
    return target


def _mark_used(target: Path) -> bool:
    """Whether the subset ``target`` is there; if so, it is marked as just used."""
    try:
        os.utime(target)
    except FileNotFoundError:
        return False
    except OSError:  # a state directory mounted read-only: the subset is there, unmarked
        return target.is_file()
    return True


def prune_subsets(folder: Path, keep: Path | None = None, *, max_subsets: int | None = None,
                  max_bytes: int | None = None) -> int:
    """Remove the least recently used subsets in ``folder`` until at most ``max_subsets`` of
    ``max_bytes`` in all are left (MAX_SUBSETS, MAX_SUBSET_BYTES by default), never ``keep`` nor one
    used within IN_USE_SECONDS; and parts of subsets older than PARTIAL_SECONDS. Returns how many
    files were removed."""
    max_subsets = MAX_SUBSETS if max_subsets is None else max_subsets
    max_bytes = MAX_SUBSET_BYTES if max_bytes is None else max_bytes
    now = time.time()
    subsets, removed = [], 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if entry.name.endswith(".otf"):
            subsets.append((stat.st_mtime, stat.st_size, entry.path))
        elif entry.name.endswith(".part") and now - stat.st_mtime > PARTIAL_SECONDS:
            removed += _remove(entry.path)
    count, size = len(subsets), sum(s for _, s, _ in subsets)
    for used, bytes_, path in sorted(subsets):  # the least recently used first
        if count <= max_subsets and size <= max_bytes:
            break
        if now - used < IN_USE_SECONDS:
            break  # this one and every later one may be in use
        if keep is not None and path == str(keep):
            continue
        removed += _remove(path)
        count, size = count - 1, size - bytes_
    return removed


def _remove(path: str) -> int:
    """1 if the file at ``path`` was removed by this call, else 0 (a failure is logged: the
    subset in hand is good whatever becomes of the others)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0  # another process's pruning was first
    except OSError as exc:
        log.warning("could not remove the stamp font %s: %s", path, exc)
        return 0
    return 1


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
    # Lazily: each table is read as the cut needs it (0.21 s of CPU instead of 0.32 to 0.37, the
    # tables written the same).
    with TTFont(str(font), lazy=True) as parsed:
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
