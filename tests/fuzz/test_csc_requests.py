"""No request body a client can send makes the CSC API fail: every route of the API's own OpenAPI
document (a new route is covered the day it is added) gets generated JSON bodies shaped by its
request schema, with values that get past the checks (a real credential, live SADs, hashes those
SADs cover, a PDF) mixed with odd ones, from each kind of caller (none, the application's bearer
token, HTTP Basic with its API key, and wrong ones of each). No answer may be a 5xx, a refusal is
CSC's JSON error, and nothing is logged as an error."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass, replace
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signserver.clock import ManualClock
from signserver.hsm.algorithms import HashAlgorithm
from signserver.http.csc.app import create_csc_app
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from tests.conftest import PASSWORD, service_with_ca
from tests.csc.conftest import basic, certified_holder, csc_server  # noqa: F401 (csc_server: a fixture)
from tests.fuzz.conftest import INTEGER_EDGES, ODD_JSON, ODD_TEXT, fuzz_settings, weighted

# About 20 to 30 s for the file on a loaded 2-core machine: most bodies are refused by the schema
# or the checks behind it in a few milliseconds; a PIN that gets to the password check costs an
# argon2 evaluation (~25 ms) and a document that gets signed some 150 ms.
EXAMPLES = 40
SADS = 12  # live SADs, each for its own digest: a generated signHash spends one now and then

SHA256 = "2.16.840.1.101.3.4.2.1"
# Mostly callers who get past the gate, so that the bodies reach the code behind it.
CALLERS = weighted((st.just("bearer"), 5), (st.just("basic"), 2),
                   (st.sampled_from(["none", "wrong-bearer", "wrong-basic"]), 3))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class CscWorld:
    server: object
    application_name: str
    api_key: str
    bearer: str
    seeds: dict[str, list]

    def headers(self, caller: str) -> dict[str, str]:
        return {"none": {}, "bearer": {"Authorization": f"Bearer {self.bearer}"},
                "wrong-bearer": {"Authorization": "Bearer " + "A" * 43},
                "basic": basic(self.application_name, self.api_key),
                "wrong-basic": basic(self.application_name, "not-the-key")}[caller]

    def keep_handed_out(self, answer) -> None:
        """SADs and operation ids the API handed out become seeds: later examples spend and poll them."""
        if answer.status_code not in (200, 202) or not answer.headers.get("content-type", "").startswith(
                "application/json"):
            return
        handed = answer.json()
        for name in ("SAD", "responseID"):
            if isinstance(handed, dict) and isinstance(handed.get(name), str):
                self.seeds[name] = self.seeds[name][-20:] + [handed[name]]

    def log_in(self) -> None:
        """A new bearer token: a generated auth/revoke may have revoked the last one."""
        with self.server.client() as client:
            answer = client.post("/csc/v2/auth/login", headers=basic(self.application_name, self.api_key), json={})
        assert answer.status_code == 200, answer.text
        self.bearer = answer.json()["access_token"]
        self.seeds["token"] = [self.bearer, "A" * 43, ""]


@pytest.fixture(scope="module")
def csc_clock() -> ManualClock:
    return ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))


@pytest.fixture(scope="module")
def csc_service(config, tmp_path_factory, csc_clock):
    """The CSC front's service (csc_server serves it), with a lock threshold that generated wrong
    PINs do not reach: a locked holder would keep every later example out of the signing paths."""
    relaxed = replace(config, accounts=replace(config.accounts, lock_threshold=100_000))
    return service_with_ca(relaxed, tmp_path_factory.mktemp("csc-fuzz") / "signserver.db", csc_clock)


@pytest.fixture(scope="module")
def csc_world(csc_server, csc_service, csc_clock):  # noqa: F811
    """The front with an application (no OTP), two certified holders, live SADs for the first
    holder's credential, and the seeds that get generated requests past the checks."""
    application, api_key = csc_service.applications.create("csc-fuzz-app", otp_required=False)
    holder = certified_holder(csc_service, csc_clock)
    other = certified_holder(csc_service, csc_clock)
    digests = [hashlib.sha256(f"authorised {i}".encode()).digest() for i in range(SADS)]
    sads = [csc_service.signer.authorize(application, holder.username, Secret(PASSWORD), None, holder.credential_id,
                                         HashAlgorithm.SHA256, [digest]).token for digest in digests]
    pdf = sample_pdf(1)
    seeds = {
        "credentialID": [holder.credential_id, other.credential_id, "", "credential-of-nobody"],
        "userID": [holder.username, other.username, ""],
        "SAD": sads + ["", "A" * 43],
        "hashes": [[b64(d)] for d in digests] + [[b64(d) for d in digests[:3]], [b64(bytes(31))], []],
        "hashes[]": [b64(d) for d in digests] + [b64(bytes(48)), b64(bytes(64)), "not base64"],
        "hash": [[b64(d)] for d in digests] + [b64(digests[0])],
        "hash[]": [b64(d) for d in digests],
        "documentDigests[]": [{"hashes": [b64(digests[0])], "hashAlgorithmOID": SHA256}],
        "hashAlgorithmOID": [SHA256, "2.16.840.1.101.3.4.2.2", "2.16.840.1.101.3.4.2.3", "1.3.14.3.2.26", "1.2.3"],
        "hashAlgo": [SHA256, "1.2.3"],
        "signAlgo": ["1.2.840.10045.4.3.2", "1.2.840.10045.2.1", "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.10",
                     "1.2.840.113549.1.1.1", "1.3.101.112"],
        "signAlgoParams": [b64(b"\x30\x00"), "AAAA", "!!"],
        "numSignatures": [1, 2, 0, -1],
        "id": ["PIN", "OTP", "pin", ""],
        "value": [PASSWORD, "123456", ""],
        "PIN": [PASSWORD, "wrong-password"],
        "OTP": ["123456", "1" * 100],
        "document": [b64(pdf), b64(b"%PDF-1.7\n"), b64(pdf[: len(pdf) // 2]), "not base64"],
        "signature_format": ["P", "C", "X", "J"],
        "conformance_level": ["Ades-B-B", "Ades-B-T", "Ades-B-LT", "Ades-B-LTA", "AdES-B"],
        "signed_envelope_property": ["Certification", "Revision", "Enveloped", "Attached"],
        "timeZone": ["Asia/Macau", "UTC", "America", "x" * 5000],
        "page": [1, 0, -1, 2, 2**31],
        "box": [[20, 20, 220, 90], [0, 0, 0, 0], [-1e308, 0, 1e308, 1], [1, 2]],
        "lang": ["en", "zh-MO", "pt-PT", "x" * 300],
        "certificates": ["none", "single", "chain", "all"],
        "responseID": ["", "0" * 32, "not-an-operation"],
        "validity_period": [1, 600, 601],
        "operationMode": ["S", "A"],
        "token": [],
        "token_type_hint": ["access_token", "refresh_token", "x"],
    }
    world = CscWorld(csc_server, application.name, api_key, "", seeds)
    world.log_in()
    return world


def _openapi() -> dict:
    """The API's OpenAPI document, from its app (which reads only the document size limit)."""
    context = SimpleNamespace(service=SimpleNamespace(config=SimpleNamespace(pades=SimpleNamespace(max_document_mb=1))),
                              faults=None)  # the app's own fault log (no requests are served)
    return create_csc_app(context).openapi()


OPENAPI = _openapi()
ROUTES = sorted((path, method.upper()) for path, item in OPENAPI["paths"].items() for method in item)


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def value_for(name: str, schema: dict, seeds: dict[str, list], wild: bool = False) -> st.SearchStrategy:
    """Values for the field ``name``: the world's realistic ones or what its schema allows (a wild
    field: anything, odd values included)."""
    schema = _resolve(schema)
    if wild:
        return st.one_of(ODD_JSON, value_for(name, schema, {}))
    if seeds.get(name):
        return st.sampled_from(seeds[name])
    if "anyOf" in schema:
        present = [value_for(name, alternative, seeds) for alternative in schema["anyOf"]
                   if alternative.get("type") != "null"]
        return weighted(*((option, 3) for option in present), (st.none(), 1))
    if "enum" in schema or "const" in schema:
        return st.sampled_from(schema.get("enum") or [schema["const"]])
    kind = schema.get("type")
    if kind == "object":
        return object_for(schema, seeds)
    if kind == "array":
        return st.lists(value_for(f"{name}[]", schema.get("items", {}), seeds), min_size=1, max_size=3)
    if kind == "string":
        # Now and then with lone surrogates (sent escaped, as JSON allows): text no UTF-8 holds.
        sizes = {"min_size": schema.get("minLength", 0), "max_size": min(schema.get("maxLength", 40), 40)}
        return weighted((st.text(**sizes), 4), (st.text(st.characters(exclude_categories=()), **sizes), 1))
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.one_of(st.integers(low, high), st.sampled_from(INTEGER_EDGES))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return ODD_JSON


@st.composite
def object_for(draw, schema: dict, seeds: dict[str, list]) -> dict:
    """An object of the schema's properties, each realistic or as the schema allows, but for a few
    made wild or left out (none, often: the example then goes as deep as a valid request), now
    and then with a property the schema does not know."""
    properties = schema.get("properties", {})
    names = sorted(properties)
    wild = draw(st.sets(st.sampled_from(names), max_size=2)) if names else set()
    missing = draw(st.sets(st.sampled_from(names), max_size=1)) if names else set()
    made = {name: draw(value_for(name, properties[name], seeds, wild=name in wild))
            for name in names if name not in missing}
    extra = draw(weighted((st.just({}), 3), (st.dictionaries(st.sampled_from(ODD_TEXT), ODD_JSON, max_size=2), 1)))
    return {**extra, **made}


def bodies_for(path: str, method: str, seeds: dict[str, list]) -> st.SearchStrategy[bytes]:
    """Serialized bodies: mostly JSON objects of the route's request schema; also other JSON, and
    bytes that are no JSON at all."""
    content = OPENAPI["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
    schema = _resolve(content.get("application/json", {}).get("schema", {"type": "object"}))
    objects = [_resolve(s) for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    shaped = st.one_of(*(object_for(o, seeds) for o in objects)).map(lambda value: json.dumps(value).encode())
    odd = st.one_of(ODD_JSON.map(lambda value: json.dumps(value).encode()), st.binary(max_size=64),
                    st.sampled_from([b'{"credentialID": "', b"[" * 10_000, b"{}" * 3]))
    return weighted((shaped, 8), (odd, 1))


@pytest.mark.parametrize("path, method", ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_generated_bodies_never_fail_the_api(csc_world, logged_errors, path, method):
    @fuzz_settings(EXAMPLES)
    @given(data=st.data(), caller=CALLERS,
           content_type=weighted((st.just("application/json"), 6), (st.sampled_from(["text/plain", ""]), 1)))
    def example(data, caller, content_type):
        # Drawn from the seeds as they are now: they grow with the SADs and operations handed out.
        body = data.draw(bodies_for(path, method, csc_world.seeds), label="body")
        logged_errors.records.clear()  # each example answers for its own lines
        headers = {**csc_world.headers(caller), **({"Content-Type": content_type} if content_type else {})}
        with csc_world.server.client() as client:
            answer = client.request(method, path, content=body, headers=headers)
        if path.endswith("/auth/revoke"):
            csc_world.log_in()  # the example may have revoked the bearer token of the others
        csc_world.keep_handed_out(answer)
        assert answer.status_code < 500, (answer.status_code, answer.text[:500])
        if answer.status_code >= 400:
            assert answer.headers["content-type"].startswith("application/json"), answer.headers
            refusal = answer.json()
            assert isinstance(refusal.get("error"), str) and refusal["error"], refusal
            assert isinstance(refusal.get("error_description"), str), refusal
        assert not logged_errors.records, [record.getMessage() for record in logged_errors.records]

    example()
