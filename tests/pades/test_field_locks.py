"""An earlier signature's lock (/Lock: the fields it locks, and PDF 2.0's /P) is kept: a document
is refused, before the holder's factors are spent, rather than signed so that the earlier
signature no longer holds."""

from __future__ import annotations

import io

import pytest
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.signable import check_signable
from signserver.pades.stamp import StampOptions
from tests.grpc_api.test_document_isolation import software_signer
from tests.pades.test_signing import sign


def _signed_with_lock(lock: fields.FieldMDPSpec, docmdp: fields.MDPPerm | None = None) -> bytes:
    """Signed by another signer in the field "Approval", whose lock is ``lock`` (and PDF 2.0's
    /P ``docmdp``); with an empty signature field "Other" beside it."""
    writer = IncrementalPdfFileWriter(io.BytesIO(sample_pdf(1)))
    fields.append_signature_field(writer, fields.SigFieldSpec("Other", box=(50, 700, 250, 780)))
    fields.append_signature_field(writer, fields.SigFieldSpec("Approval", box=(300, 700, 500, 780),
                                                              field_mdp_spec=lock, doc_mdp_update_value=docmdp))
    out = io.BytesIO()
    signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name="Approval"), signer=software_signer(), output=out)
    return out.getvalue()


LOCK_ALL = fields.FieldMDPSpec(fields.FieldMDPAction.ALL)
LOCK_OTHER = fields.FieldMDPSpec(fields.FieldMDPAction.INCLUDE, ["Other"])

REFUSED = [
    pytest.param(LOCK_ALL, fields.MDPPerm.NO_CHANGES, StampOptions(), "locks it against any change", id="P1-new"),
    pytest.param(LOCK_OTHER, fields.MDPPerm.NO_CHANGES, StampOptions(visible=False), "locks it against any change",
                 id="P1-invisible"),
    pytest.param(LOCK_ALL, None, StampOptions(), "locks that field", id="all-fields-new"),
    pytest.param(LOCK_ALL, None, StampOptions(field_name="Other"), "locks that field", id="all-fields-existing"),
    pytest.param(LOCK_OTHER, None, StampOptions(field_name="Other"), "locks that field", id="listed-field"),
]


def _check_signable(world, data: bytes, stamp: StampOptions) -> None:
    service = world[0]
    check_signable(io.BytesIO(data), stamp, None, service.pades.font(), service.clock.now())


@pytest.mark.parametrize(("lock", "docmdp", "stamp", "refusal"), REFUSED)
def test_signing_a_field_an_earlier_signature_locks_is_refused_before_the_factors(pades_world, lock, docmdp, stamp,
                                                                                  refusal):
    locked = _signed_with_lock(lock, docmdp)
    with pytest.raises(InvalidArgument, match=refusal):
        _check_signable(pades_world, locked, stamp)
    with pytest.raises(InvalidArgument, match=refusal):
        sign(pades_world, locked, PadesLevel.B_B, stamp)


@pytest.mark.parametrize("stamp", [StampOptions(), StampOptions(visible=False)], ids=["visible", "invisible"])
def test_a_field_the_lock_leaves_open_is_signed_and_the_earlier_signature_holds(pades_world, stamp):
    service = pades_world[0]
    signed = sign(pades_world, _signed_with_lock(LOCK_OTHER), PadesLevel.B_B, stamp)
    reports = {report.field: report for report in service.pades.verify_pdf(io.BytesIO(signed)).signatures}
    assert reports["Approval"].modification_allowed, reports["Approval"].reason
    assert len(reports) == 2
