"""A documents call refused by a document's preparation leaves its token whole and no holder key
open."""

from __future__ import annotations

import hashlib
import io

import pytest

from signserver.errors import InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from signserver.signing import activation
from tests.conftest import PASSWORD


def authorised(service, app, created, digests: list[bytes]) -> str:
    return service.signer.authorize(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                                    HashAlgorithm.SHA256, digests).token


def test_a_document_refused_by_its_preparation_spends_nothing_and_opens_no_key(pades_world):
    """Every document of a call is prepared before the token is spent: a damaged one refuses the
    call before any key is opened or any digest spent (a failure after a signature, the key open,
    closes it at the next signature: tests/signing/test_package_tokens.py)."""
    service, app, created, _ = pades_world
    good, damaged = sample_pdf(1), b"%PDF-1.7\nthis is no document\n"
    token = authorised(service, app, created, [hashlib.sha256(good).digest(), hashlib.sha256(damaged).digest()])
    documents = [(io.BytesIO(good), io.BytesIO(), PadesLevel.B_B, StampOptions(visible=False)),
                 (io.BytesIO(damaged), io.BytesIO(), PadesLevel.B_B, StampOptions(visible=False))]
    with pytest.raises(InvalidArgument, match=r"documents\[1\]: the document is not a readable PDF"):
        service.sign_pdfs_with_activation(app, created.credential.id, Secret(token), documents)
    assert not service.package_keys.is_open(activation.token_hash(token), service.clock.now())

    signed = io.BytesIO()
    service.sign_pdfs_with_activation(app, created.credential.id, Secret(token),
                                      [(io.BytesIO(good), signed, PadesLevel.B_B, StampOptions(visible=False))])
    assert signed.getvalue().startswith(good) and len(signed.getvalue()) > len(good)
