"""tests.readable: the tests' wait for something to read takes any descriptor, as a long test
process holds more than select.select's 1024."""

from __future__ import annotations

import os
import resource

import pytest

from tests.readable import readable

pytestmark = pytest.mark.one_store

HIGH = 1500  # above FD_SETSIZE (1024)


def pipe_reading_at_high() -> tuple[int, int]:
    """A pipe whose reading end is descriptor HIGH: (HIGH, the writing end)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= HIGH:
        pytest.skip(f"this process may open only {soft} descriptors")
    reader, writer = os.pipe()
    os.dup2(reader, HIGH)
    os.close(reader)
    return HIGH, writer


def test_a_descriptor_above_1024_is_waited_for():
    reader, writer = pipe_reading_at_high()
    try:
        assert not readable(reader, 0.01)
        os.write(writer, b"x")
        assert readable(reader, 1)
        assert os.read(reader, 1) == b"x"
    finally:
        os.close(reader)
        os.close(writer)


def test_an_ended_input_counts_as_readable():
    reader, writer = pipe_reading_at_high()
    try:
        os.close(writer)
        assert readable(reader, 1)
        assert os.read(reader, 1) == b""
    finally:
        os.close(reader)
