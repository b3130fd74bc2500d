"""The holder key a documents call opens closes once its token is spent, even when a document
fails before its signature."""

from __future__ import annotations

import hashlib
import io

import pytest

from signserver.errors import InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from signserver.signing import activation
from tests.conftest import PASSWORD


def authorised(service, app, created, digests: list[bytes]) -> str:
    return service.signer.authorize(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                                    HashAlgorithm.SHA256, digests).token


def test_a_key_whose_document_failed_before_its_signature_closes_at_the_next_signature(pades_world):
    service, app, created, _ = pades_world
    good, damaged = sample_pdf(1), b"%PDF-1.7\nthis is no document\n"
    token = authorised(service, app, created, [hashlib.sha256(good).digest(), hashlib.sha256(damaged).digest()])
    documents = [(io.BytesIO(good), io.BytesIO(), PadesLevel.B_B, StampOptions(visible=False)),
                 (io.BytesIO(damaged), io.BytesIO(), PadesLevel.B_B, StampOptions(visible=False))]
    with pytest.raises(InvalidArgument):  # the first signed, opening the key; the second never reached the HSM
        service.sign_pdfs_with_activation(app, created.credential.id, Secret(token), documents)
    token_hash = activation.token_hash(token)
    assert service.package_keys.is_open(token_hash, service.clock.now())

    other = [hashlib.sha256(b"another signature").digest()]
    service.signer.sign_hashes(app, created.credential.id, Secret(authorised(service, app, created, other)),
                               SignatureAlgorithm.ECDSA_SHA256, other)
    assert not service.package_keys.is_open(token_hash, service.clock.now())
