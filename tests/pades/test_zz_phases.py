import io, time, collections
import signserver.pades.document as d
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from tests.conftest import PASSWORD
from pyhanko.sign.signers import pdf_signer as ps
import signserver.accounts.authentication as au

T = collections.defaultdict(float)
def timed(owner, name, label, is_async=False):
    orig = getattr(owner, name)
    if is_async:
        async def w(*a, **k):
            t = time.perf_counter(); r = await orig(*a, **k); T[label] += time.perf_counter() - t; return r
    else:
        def w(*a, **k):
            t = time.perf_counter(); r = orig(*a, **k); T[label] += time.perf_counter() - t; return r
    setattr(owner, name, w)

def test_phases(pades_world):
    service, app, created, _ = pades_world
    S = ps.PdfSigningSession
    timed(S, "perform_presign_validation", "presign", True)
    timed(S, "estimate_signature_container_size", "estimate", True)
    timed(S, "prepare_tbs_document", "prepare_tbs")
    timed(ps.PdfTBSDocument, "digest_tbs_document", "digest_tbs")
    timed(ps.PdfTBSDocument, "perform_signature", "perform_signature", True)
    timed(ps.PdfPostSignatureDocument, "post_signature_processing", "post (dss)", True)
    timed(d, "open_for_signing", "open")
    timed(d, "_field_spec", "field_spec")
    timed(type(service.pades), "_job", "job")
    timed(type(service.pades), "_finish_audit", "audit")
    timed(type(service.hash_signer) if hasattr(service, "hash_signer") else type(service.pades._hash_signer), "authorize", "authorize")
    timed(type(service.pades._hash_signer), "spend", "spend")
    pdf = sample_pdf(1)
    n = 30
    for visible in (True,):
        stamp = StampOptions() if visible else StampOptions(visible=False)
        def once():
            out = io.BytesIO()
            service.pades.sign_pdf(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                                   io.BytesIO(pdf), out, PadesLevel.B_LT, stamp)
        once(); T.clear()
        t = time.perf_counter()
        for _ in range(n): once()
        total = (time.perf_counter() - t) * 1000 / n
        print("total ms/doc", total)
        for k, v in T.items(): print(f"{k:20s} {v*1000/n:7.2f}")
