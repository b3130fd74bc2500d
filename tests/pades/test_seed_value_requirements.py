"""A signature field's seed values (/SV) that the service's signature would break are refused
before the holder's factors are checked, as everything else the client's input decides."""

from __future__ import annotations

import io

import pytest

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.signable import check_signable
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from tests.pades.field_documents import with_empty_field
from tests.pades.test_signing import sign

IN_THE_FIELD = StampOptions(field_name="Sig1")

UNMET = [
    pytest.param(b"/DigestMethod [/SHA512] /Ff 64", IN_THE_FIELD, "requires the digest algorithm SHA512",
                 id="digest"),
    pytest.param(b"/SubFilter [/adbe.pkcs7.detached] /Ff 2", IN_THE_FIELD,
                 "requires the signature encoding adbe.pkcs7.detached", id="encoding"),
    pytest.param(b"/MDP << /P 2 >>", IN_THE_FIELD, "meant for a certification signature", id="certification"),
    pytest.param(b"/Reasons [(Approved) (Seen)] /Ff 8", IN_THE_FIELD, "reason must be one the field lists: "
                 "'Approved', 'Seen'", id="reason-missing"),
    pytest.param(b"/Reasons [(Approved)] /Ff 8", StampOptions(field_name="Sig1", reason="Rejected"),
                 "reason must be one the field lists", id="reason-other"),
    pytest.param(b"/Reasons [] /Ff 8", StampOptions(field_name="Sig1", reason="Approved"),
                 "forbids giving a reason", id="reason-forbidden"),
    pytest.param(b"/AddRevInfo true /Ff 32", IN_THE_FIELD, "requires Adobe-style revocation data",
                 id="adobe-revocation"),
    pytest.param(b"/AppearanceFilter (Fancy) /Ff 256", IN_THE_FIELD, "requires the named appearance 'Fancy'",
                 id="named-appearance"),
]


def _check(world, data: bytes, stamp: StampOptions, level: PadesLevel | None = None) -> None:
    service = world[0]
    check_signable(io.BytesIO(data), stamp, None, service.pades.font(), service.clock.now(), level)


@pytest.mark.parametrize(("seed_values", "stamp", "refusal"), UNMET)
def test_a_seed_value_the_signature_would_break_is_refused_before_the_factors(pades_world, seed_values, stamp,
                                                                              refusal):
    data = with_empty_field(seed_values)
    with pytest.raises(InvalidArgument, match=refusal):
        _check(pades_world, data, stamp)
    with pytest.raises(InvalidArgument, match=refusal):
        sign(pades_world, data, PadesLevel.B_B, stamp)


def test_one_call_signing_refuses_such_a_field_before_the_holders_password_is_checked(pades_world):
    service, app, created, _ = pades_world
    with pytest.raises(InvalidArgument, match="requires the digest algorithm SHA512"):
        service.pades.sign_pdf(app, created.account.username, Secret("not the password"), None,
                               created.credential.id, io.BytesIO(with_empty_field(b"/DigestMethod [/SHA512] /Ff 64")),
                               io.BytesIO(), PadesLevel.B_B, IN_THE_FIELD)


LEVEL_DECIDES = pytest.mark.parametrize(("seed_values", "level", "refusal"), [
    (b"/TimeStamp << /Ff 1 >>", PadesLevel.B_B, "requires a time-stamp"),
    (b"/AddRevInfo false /Ff 32", PadesLevel.B_LT, "forbids revocation data"),
], ids=["time-stamp", "no-revocation-data"])


@LEVEL_DECIDES
def test_one_call_signing_refuses_what_its_level_decides_before_the_holders_password_is_checked(
        pades_world, seed_values, level, refusal):
    service, app, created, _ = pades_world
    with pytest.raises(InvalidArgument, match=refusal):
        service.pades.sign_pdf(app, created.account.username, Secret("not the password"), None,
                               created.credential.id, io.BytesIO(with_empty_field(seed_values)),
                               io.BytesIO(), level, IN_THE_FIELD)


@LEVEL_DECIDES
def test_what_the_level_decides_is_refused_once_the_level_is_known(pades_world, seed_values, level, refusal):
    data = with_empty_field(seed_values)
    _check(pades_world, data, IN_THE_FIELD)  # the level not given: left to signing
    with pytest.raises(InvalidArgument, match=refusal):
        _check(pades_world, data, IN_THE_FIELD, level)
    with pytest.raises(InvalidArgument, match=refusal):
        sign(pades_world, data, level, IN_THE_FIELD)


def test_seed_values_the_signature_meets_are_signed(pades_world):
    data = with_empty_field(b"/DigestMethod [/SHA256 /SHA512] /SubFilter [/ETSI.CAdES.detached] /Reasons [(Approved)] "
                            b"/MDP << /P 0 >> /AddRevInfo false /Ff 106")
    stamp = StampOptions(field_name="Sig1", reason="Approved")
    _check(pades_world, data, stamp, PadesLevel.B_T)
    signed = sign(pades_world, data, PadesLevel.B_T, stamp)
    [report] = pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.valid and report.field == "Sig1"
