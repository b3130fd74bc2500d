"""Stamp text a JSON client can send but no PDF or font can hold: a lone UTF-16 surrogate
("\\ud800" is valid JSON, and the CSC API reads JSON) is refused as the client's error, naming the
field, both by the checks made before the holder's factors and by signing itself."""

from __future__ import annotations

import io

import pytest

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.signable import check_signable
from signserver.pades.stamp import StampOptions
from tests.pades.test_signing import sign

LONE = "\ud800"

FIELDS = {
    "caption": StampOptions(caption=f"Assinatura {LONE}"),
    "reason": StampOptions(reason=f"aprovado {LONE}"),
    "location": StampOptions(location=f"Macau {LONE}"),
    "verification_url": StampOptions(verification_url=f"https://sign.example.mo/{LONE}"),
    "field_name": StampOptions(field_name=f"Assinatura{LONE}"),
}


@pytest.mark.parametrize("field", list(FIELDS))
def test_a_lone_surrogate_is_refused_when_signing(pades_world, field):
    with pytest.raises(InvalidArgument, match="U\\+D800") as refused:
        sign(pades_world, sample_pdf(1), PadesLevel.B_B, FIELDS[field])
    assert refused.value.field == field


@pytest.mark.parametrize("holder", [None, "Weng Sam LUZIA KUAN"], ids=["before the factors", "with the holder"])
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_lone_surrogate_is_refused_before_signing(pades_world, field, holder):
    service = pades_world[0]
    with pytest.raises(InvalidArgument, match="U\\+D800") as refused:
        check_signable(io.BytesIO(sample_pdf(1)), FIELDS[field], holder, service.pades.font(), service.clock.now())
    assert refused.value.field == field
