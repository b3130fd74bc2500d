"""The stamp fonts kept on disk, one subset of the face per character set, are bounded: any
application can ask for a stamp of any text. The least recently used go first once there are more
than the bound, never one used within the last few minutes (a signing may be about to open it),
and parts left by a subset process that was killed go too."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from signserver.pades import font as stamp_fonts
from signserver.pades.font import IN_USE_SECONDS, PARTIAL_SECONDS, font_for_text, prune_subsets


@pytest.fixture
def face(pades_world, tmp_path) -> Path:
    """The run's face, in a folder of this test's own (the subsets are made beside it)."""
    linked = tmp_path / "fonts" / "face.otf"
    linked.parent.mkdir()
    linked.symlink_to(pades_world[0].pades.font())
    return linked


def age(path: Path, seconds: float) -> None:
    """Mark ``path`` as last used ``seconds`` ago."""
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def test_the_least_recently_used_subset_goes_when_one_more_is_made(face, monkeypatch):
    monkeypatch.setattr(stamp_fonts, "MAX_SUBSETS", 2)
    first, second = font_for_text(face, ["Ana"]), font_for_text(face, ["Bruno"])
    age(first, IN_USE_SECONDS + 200)
    age(second, IN_USE_SECONDS + 100)
    assert font_for_text(face, ["Ana"]) == first  # used again: now the most recent
    assert first.stat().st_mtime > second.stat().st_mtime
    age(first, IN_USE_SECONDS + 50)  # and no longer in use, as Bruno's is not
    third = font_for_text(face, ["翁心"])
    assert sorted(p.name for p in third.parent.iterdir()) == sorted([first.name, third.name])
    assert font_for_text(face, ["Bruno"]) == second  # made again when asked for again
    assert second.is_file()


def make(folder: Path, name: str, size: int, used_ago: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * size)
    age(path, used_ago)
    return path


def test_subsets_beyond_the_bytes_go_oldest_first(tmp_path):
    old = [make(tmp_path, f"old{i}.otf", 1000, IN_USE_SECONDS + 100 * (5 - i)) for i in range(5)]
    assert prune_subsets(tmp_path, max_subsets=100, max_bytes=2500) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old3.otf", "old4.otf"]
    assert not any(p.exists() for p in old[:3])


def test_a_subset_used_recently_is_kept_over_the_bound(tmp_path):
    make(tmp_path, "unused.otf", 1000, IN_USE_SECONDS + 100)
    recent = [make(tmp_path, f"recent{i}.otf", 1000, IN_USE_SECONDS / 2 - i) for i in range(3)]
    assert prune_subsets(tmp_path, max_subsets=1) == 1
    assert sorted(tmp_path.iterdir()) == sorted(recent)


def test_a_part_left_by_a_killed_subset_process_goes(tmp_path):
    make(tmp_path, "left.part", 1000, PARTIAL_SECONDS + 60)
    being_written = make(tmp_path, "writing.part", 1000, 1)
    kept = make(tmp_path, "kept.otf", 1000, IN_USE_SECONDS + 100)
    assert prune_subsets(tmp_path) == 1
    assert sorted(tmp_path.iterdir()) == sorted([being_written, kept])
