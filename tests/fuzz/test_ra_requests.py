"""No request a holder's client can send makes the RA's JSON API fail: every route of the app (a new
route is covered the day it is added) gets generated bodies (JSON objects of the API's fields with
realistic values, the holder's addresses, a code, the password, mixed with odd ones; photos, PDFs
and bytes of any kind, under any content type), for the renewal and for others, with the renewal's
holder token, a wrong one or none. No answer is a 500, a refusal is the API's JSON error, and
nothing is logged as an error."""

from __future__ import annotations

import io
import json
import re

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from signserver.clock import ManualClock
from signserver.pades.sample import sample_pdf
from signserver.ra.api import build_app
from signserver.ra.server import build_workflow
from signserver.ra.settings import RaSettings
from tests.conftest import LOOPBACK_TLS, PASSWORD, empty_database_url
from tests.fuzz.conftest import ODD_JSON, ODD_TEXT, fuzz_settings, weighted
from tests.ra.conftest import KUAN, START, registry  # noqa: F401 (registry: a fixture)
from tests.ra.running import Served
from tests.ra.test_api import noticed_renewal

# About 10 to 20 s for the file on a loaded 2-core machine: most requests are refused in a
# millisecond or two; those that reach the registry wait for the reference registry's answer.
EXAMPLES = 25


def _photo(kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 150, 120)).save(out, kind)
    return out.getvalue()


PHOTOS = [_photo("JPEG"), _photo("PNG"), b"\xff\xd8\xff" + bytes(20), b"\x89PNG\r\n\x1a\n", b"II*\x00"]
PDFS = [sample_pdf(1), b"%PDF-1.7\n", sample_pdf(1)[:300]]
CONTENT_TYPES = ["application/json", "application/pdf", "image/jpeg", "image/png", "image/tiff", "text/plain",
                 "application/json; charset=utf-16", "image/", ""]


@pytest.fixture(scope="module")
def ra_world(tmp_path_factory, registry):  # noqa: F811
    """The API as `signserver ra serve` builds it, over a renewal noticed to KUAN, for every route's
    examples (which move the renewal on, step by step, as they get through): its URL, the
    renewal's id and its holder token."""
    folder = tmp_path_factory.mktemp("ra-fuzz")
    ra_clock = ManualClock(START)
    settings = RaSettings(state_dir=folder, database_url=empty_database_url(folder / "ra-fuzz.sqlite"),
                          registry_url=registry.url, registry_attempts=1, registry_timeout_seconds=5, notice_days=60)
    workflow, database = build_workflow(settings, ra_clock)
    try:
        renewal_id, token = noticed_renewal(workflow, database, ra_clock)
        with Served(build_app(workflow)) as served:
            yield served.url, renewal_id, token
    finally:
        database.close()


def fields(seeds: dict[str, list]) -> st.SearchStrategy[dict]:
    """JSON objects of the API's fields, each realistic or odd, and now and then one it does not know."""
    values = {name: weighted((st.sampled_from(options), 4), (ODD_JSON, 1)) for name, options in seeds.items()}
    known = st.fixed_dictionaries({}, optional=values)
    extra = st.dictionaries(st.sampled_from(ODD_TEXT), ODD_JSON, max_size=2)
    return st.tuples(known, weighted((st.just({}), 3), (extra, 1))).map(lambda pair: {**pair[1], **pair[0]})


def routes() -> list[tuple[str, str]]:
    app = build_app(workflow=None)
    return sorted((route.path, method) for route in app.routes for method in route.methods if method != "HEAD")


ROUTES = routes()
RENEWAL_ID = re.compile(r"\{renewal_id[^}]*\}")


@pytest.mark.parametrize("path, method", ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_generated_requests_never_fail_the_api(ra_world, logged_errors, path, method):
    url, renewal_id, token = ra_world
    seeds = {"address": list(KUAN.emails) + ["someone@example.mo", "KUAN@EXAMPLE.MO"],
             "code": ["000000", "123456", "12345", "1234567", "１２３４５６"],
             "accepted": [True, False, "true", 1],
             "password": [PASSWORD, "short", "Another-pass-2026"],
             "otp": ["", "123456", "1" * 100],
             "new_password": ["", "New-pass-2027", "short"],
             "revocation_phrase": ["NewPhrase2027", "short", "x" * 65, "with space 2027"],
             "confirmation": ["", "New-pass-2027"]}
    json_bodies = fields(seeds).map(lambda value: json.dumps(value).encode())
    bodies = weighted((json_bodies, 6), (st.sampled_from(PHOTOS + PDFS), 2), (st.binary(max_size=64), 1))

    @fuzz_settings(EXAMPLES)
    @given(body=bodies, content_type=weighted((st.just("application/json"), 4), (st.sampled_from(CONTENT_TYPES), 2)),
           with_token=weighted((st.just(token), 5), (st.sampled_from(["", "A" * 43, token[:-1]]), 1)),
           renewal=weighted((st.just(renewal_id), 5), (st.sampled_from(["", "0" * 32, "../x", "漢"]), 1)))
    def example(body, content_type, with_token, renewal):
        logged_errors.records.clear()  # each example answers for its own lines
        target = RENEWAL_ID.sub(renewal or "%20", path)
        headers = {**({"Authorization": f"Bearer {with_token}"} if with_token else {}),
                   **({"Content-Type": content_type} if content_type else {})}
        # A context made once (the address is plain HTTP): httpx would load the system's roots for
        # every request otherwise, the most of an example's CPU.
        answer = httpx.request(method, url + target, content=body if method == "POST" else None, headers=headers,
                               timeout=60, verify=LOOPBACK_TLS)
        assert answer.status_code != 500, answer.text[:500]
        if answer.status_code >= 400 and answer.status_code != 404:
            refusal = answer.json()
            assert isinstance(refusal.get("error"), str) and isinstance(refusal.get("message"), str), refusal
        assert not logged_errors.records, [record.getMessage() for record in logged_errors.records]

    example()
