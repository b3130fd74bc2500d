"""Verification is bounded (signatures, revisions, objects, seconds) and refuses clearly, before
the heavy work; its inputs and results are plain data that cross to a child process."""

from __future__ import annotations

import io
import pickle

import pytest

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.pades.verification import (TrustMaterial, VerificationLimits, verify_file, verify_stream)
from tests.pades.test_signing import sign


class CountingClock:
    """Seconds spent, as verification asks for them: ``step`` more at each question."""

    def __init__(self, step: float = 0.0):
        self.questions = 0
        self.step = step

    def __call__(self) -> float:
        self.questions += 1
        return self.step * (self.questions - 1)


@pytest.fixture(scope="module")
def three_signatures(pades_world) -> bytes:
    document = sample_pdf(1)
    for index in range(3):
        document = sign(pades_world, document, PadesLevel.B_B, StampOptions(box=(40 + 180 * index, 40,
                                                                                 200 + 180 * index, 100)))
    return document


@pytest.fixture(scope="module")
def trust(pades_world) -> TrustMaterial:
    return pades_world[0].pades.trust_material()


def test_defaults_are_generous_for_real_documents():
    assert VerificationLimits() == VerificationLimits(max_signatures=50, max_revisions=200, max_objects=1_000_000,
                                                      max_seconds=20.0)


def test_too_many_signatures_are_refused_before_any_is_validated(three_signatures, trust):
    clock = CountingClock()
    with pytest.raises(InvalidArgument) as refused:
        verify_stream(io.BytesIO(three_signatures), trust, VerificationLimits(max_signatures=2), elapsed=clock)
    assert "3 signatures" in str(refused.value) and "at most 2" in str(refused.value)
    assert clock.questions == 0  # the time is asked before each signature: none was started


def test_within_the_limits_every_signature_is_validated(three_signatures, trust):
    clock = CountingClock()
    verdict = verify_stream(io.BytesIO(three_signatures), trust, VerificationLimits(max_signatures=3), elapsed=clock)
    assert verdict.verdict, verdict.reason
    assert len(verdict.signatures) == 3 and clock.questions == 3


def test_too_many_revisions_are_refused(three_signatures, trust):
    with pytest.raises(InvalidArgument, match=r"has 4 revisions; verification takes at most 3"):
        verify_stream(io.BytesIO(three_signatures), trust, VerificationLimits(max_revisions=3))


def test_too_many_objects_are_refused(three_signatures, trust):
    with pytest.raises(InvalidArgument, match=r"has \d+ objects over its revisions; verification takes at most 10$"):
        verify_stream(io.BytesIO(three_signatures), trust, VerificationLimits(max_objects=10))


def test_time_is_checked_between_signatures(three_signatures, trust):
    clock = CountingClock(step=15.0)  # 0 s before the first signature, 15 before the second, 30 before the third
    with pytest.raises(InvalidArgument, match=r"exceeds its limit of 20 s after 2 of the document.s 3 signatures"):
        verify_stream(io.BytesIO(three_signatures), trust, VerificationLimits(max_seconds=20), elapsed=clock)
    assert clock.questions == 3  # two signatures validated, the third refused


def test_deeply_nested_objects_are_refused_as_damaged(trust):
    nesting = b"[" * 100_000 + b"]" * 100_000
    document = sample_pdf(1).replace(b"/Root 1 0 R", b"/Root 1 0 R /Deep " + nesting)
    with pytest.raises(InvalidArgument, match="damaged"):
        verify_stream(io.BytesIO(document), trust, VerificationLimits())


def test_a_looping_page_tree_is_refused_as_damaged(trust):
    looping = sample_pdf(1).replace(b"/Kids [3 0 R]", b"/Kids [2 0 R]")  # the root is its own kid
    with pytest.raises(InvalidArgument, match="damaged .*the page tree loops"):
        verify_stream(io.BytesIO(looping), trust, VerificationLimits())


def test_inputs_and_verdict_are_plain_data(three_signatures, trust, tmp_path):
    limits = VerificationLimits(max_signatures=3)
    path = tmp_path / "signed.pdf"
    path.write_bytes(three_signatures)
    verdict = verify_file(str(path), pickle.loads(pickle.dumps(trust)), pickle.loads(pickle.dumps(limits)))
    assert pickle.loads(pickle.dumps(verdict)) == verdict and verdict.verdict


def test_an_unreadable_file_is_refused(trust, tmp_path):
    with pytest.raises(InvalidArgument, match="cannot be read"):
        verify_file(str(tmp_path / "missing.pdf"), trust, VerificationLimits())
