"""The holder's JSON API served by uvicorn on a free loopback port over the RA's real database and
the reference registry: the holder token on every call, bodies it cannot parse, help codes it does
not know, one registry attempt on the holder's path, a photo told by its bytes, and a registry that
refuses the RA's own credentials."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import re

import httpx
import pytest

from signserver.ra import errors
from signserver.ra import renewal as machine
from signserver.ra.api import _error_response, build_app
from signserver.ra.registry import photo_media_type
from signserver.ra.server import build_workflow
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.workflow import RenewalWorkflow
from signserver.registry_dev.app import RegistryState
from signserver.registry_dev.faults import Fault
from signserver.registry_dev.identities import load_identities
from signserver.registry_dev.server import SAMPLE_FIXTURES, RunningRegistry
from tests.conftest import LOOPBACK_TLS, empty_database_url
from tests.ra.conftest import KUAN, files_not_taken, opened_renewal, photo
from tests.ra.running import Served

# The calls share one TLS context (see LOOPBACK_TLS) though they speak plain HTTP.
http_get, http_post, http_request = (functools.partial(call, verify=LOOPBACK_TLS)
                                     for call in (httpx.get, httpx.post, httpx.request))

TOKEN_LINE = re.compile(r"Access key:\s*([A-Za-z0-9_\-]{20,})")  # the notice's holder token


def noticed_renewal(workflow: RenewalWorkflow, database, clock) -> tuple[str, str]:
    """A renewal confirmed and noticed, as the operator's confirm-renewal leaves it: its id and the
    holder token of its notice e-mail."""
    now = clock.now()
    renewal = opened_renewal(database, KUAN, now)
    with database.transaction() as conn:
        repository.save_renewal(conn, machine.confirm(renewal, "dsaj-operator", now))
    assert workflow.run_notices() == 1
    with database.transaction() as conn:
        bodies = [row.body for row in repository.due_emails(conn, now)]
    tokens = {found.group(1) for found in map(TOKEN_LINE.search, bodies) if found}
    assert len(tokens) == 1, bodies  # one notice to each of the holder's addresses, with one token
    return renewal.id, tokens.pop()


@pytest.fixture
def served_workflow(tmp_path, ra_clock, registry):
    """The workflow as `signserver ra serve` builds it (server.build_workflow) from its settings:
    the registry asked up to three times a call, except on the holder's path."""
    settings = RaSettings(state_dir=tmp_path, database_url=empty_database_url(tmp_path / "ra-api.sqlite"),
                          registry_url=registry.url, registry_attempts=3, notice_days=60)
    workflow, database = build_workflow(settings, ra_clock)
    yield workflow, database
    database.close()


@pytest.fixture
def workflow(served_workflow):
    return served_workflow[0]


@pytest.fixture
def api(workflow):
    with Served(build_app(workflow)) as running:
        yield running


@pytest.fixture
def noticed(served_workflow, ra_clock):
    workflow, database = served_workflow
    return noticed_renewal(workflow, database, ra_clock)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_holder_token_opens_the_renewal(api, noticed):
    renewal_id, token = noticed
    shown = http_get(f"{api.url}/renewals/{renewal_id}", headers=bearer(token), timeout=30)
    assert shown.status_code == 200 and shown.json()["state"] == "awaiting_identity"
    consented = http_post(f"{api.url}/renewals/{renewal_id}/consent", headers={"authorization": f"bearer {token}"},
                           timeout=30)
    assert consented.status_code == 200 and consented.json()["steps"]["consent"] is True


@pytest.mark.parametrize("method, path", [
    ("get", ""), ("post", "/consent"), ("post", "/codes"), ("post", "/codes/verify"), ("post", "/registry"),
    ("post", "/face"), ("post", "/agreement"), ("get", "/application"), ("get", "/application/signed"),
    ("post", "/application/sign"), ("post", "/application/upload"), ("post", "/activation"),
])
def test_every_holder_call_wants_the_token(api, noticed, method, path):
    renewal_id, token = noticed
    for headers in ({}, bearer("x" * 43), {"Authorization": f"Basic {token}"}, {"Authorization": token}):
        refused = http_request(method, f"{api.url}/renewals/{renewal_id}{path}", headers=headers,
                                content=b'{"address": "kuan@example.mo"}', timeout=30)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"] == "not_authorised"


def test_no_such_renewal_and_a_wrong_token_are_one_answer(api, noticed):
    renewal_id, token = noticed
    wrong = http_get(f"{api.url}/renewals/{renewal_id}", headers=bearer(token[::-1]), timeout=30)
    absent = http_get(f"{api.url}/renewals/{'0' * 32}", headers=bearer(token), timeout=30)
    assert (wrong.status_code, wrong.json(), wrong.headers["www-authenticate"]) == \
        (absent.status_code, absent.json(), absent.headers["www-authenticate"])


def test_the_token_never_opens_another_renewal(api, served_workflow, ra_clock, noticed):
    renewal_id, token = noticed
    with served_workflow[1].transaction() as conn:
        other = repository.insert_renewal(conn, machine.open_renewal(
            "f" * 32, serial="5e1b", account=KUAN.account, profile="cloud-signature-government",
            expires=ra_clock.now() + datetime.timedelta(days=45), holder=KUAN, now=ra_clock.now()))
    assert http_get(f"{api.url}/renewals/{other.id}", headers=bearer(token), timeout=30).status_code == 401


def test_healthz_needs_no_token(api):
    assert http_get(f"{api.url}/healthz", timeout=30).json() == {"status": "ok"}


@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"a":' * 60_000, b"9" * 5_000, b"\xff\xfe{}", b"{\"a\": 1"])
def test_a_body_that_cannot_be_parsed_is_a_bad_request(api, noticed, body):
    renewal_id, token = noticed
    answer = http_post(f"{api.url}/renewals/{renewal_id}/codes", headers=bearer(token), content=body, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request"


def test_a_help_code_outside_the_table_gets_generic_guidance():
    answer = _error_response(errors.StepRefused("refused by the core", help_code="AC-AB-0099"))
    assert answer.status_code == 409
    body = answer.body.decode()
    assert "AC-AB-0099" in body and "the registration authority" in body


def test_a_help_code_s_guidance_names_the_configured_provider():
    answer = _error_response(errors.StepRefused("refused by the core", help_code="AC-AB-0015"), "Example Trust")
    guidance = json.loads(answer.body)["guidance"]
    assert set(guidance) == {"zh-Hant", "pt", "en"} and all("Example Trust" in text for text in guidance.values())


def test_the_holder_waits_for_one_registry_attempt_only(api, noticed, workflow, registry):
    renewal_id, token = noticed
    assert http_post(f"{api.url}/renewals/{renewal_id}/consent", headers=bearer(token), timeout=30).status_code == 200
    registry.state.faults.set(Fault(status=503))
    registry.state.forget_requests()
    try:
        waiting = http_post(f"{api.url}/renewals/{renewal_id}/registry", headers=bearer(token), timeout=60)
        assert waiting.status_code == 200 and waiting.json()["state"] == "waiting_for_registry"
        assert len(registry.state.requests()) == 1  # asked once: the holder is not kept waiting
        workflow.retry_registry()
        assert len(registry.state.requests()) == 1 + 3  # the background pass asks with the configured attempts
    finally:
        registry.state.faults.clear()


@pytest.mark.parametrize("path, field", [("/application/sign", "password"), ("/application/sign", "otp"),
                                         ("/codes", "address")])
def test_text_that_is_not_unicode_is_a_bad_request(api, noticed, path, field):
    renewal_id, token = noticed
    body = {"password": "Abcdefg1", "otp": "123456", "address": "kuan@example.mo"}
    raw = json.dumps(body).replace(json.dumps(body[field]), '"\\ud800"').encode()  # a lone surrogate
    answer = http_post(f"{api.url}/renewals/{renewal_id}{path}", headers=bearer(token), content=raw, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request", answer.text


def test_after_its_end_only_the_renewal_itself_is_read(api, served_workflow, ra_clock, noticed):
    renewal_id, token = noticed
    _, database = served_workflow
    with database.transaction() as conn:
        renewal = repository.get_renewal(conn, renewal_id)
        repository.save_renewal(conn, machine.refuse(renewal, "renew in person", ra_clock.now()))
    shown = http_get(f"{api.url}/renewals/{renewal_id}", headers=bearer(token), timeout=30)
    assert shown.status_code == 200 and shown.json()["state"] == "refused"
    for path in ("/application", "/application/signed"):
        assert http_get(f"{api.url}/renewals/{renewal_id}{path}", headers=bearer(token), timeout=30).status_code == 401


def test_a_photo_is_told_by_its_bytes_whatever_its_content_type(api, noticed, workflow, registry):
    renewal_id, token = noticed
    base = f"{api.url}/renewals/{renewal_id}"
    for step in ("/consent", "/registry"):
        assert http_post(base + step, headers=bearer(token), timeout=60).status_code == 200
    registry.state.forget_requests()
    for name, content, declared in files_not_taken():
        with pytest.raises(errors.PhotoRefused) as told:  # as the pages tell it
            photo_media_type(content)
        refused = http_post(base + "/face", headers={**bearer(token), "Content-Type": declared}, content=content,
                             timeout=30)
        assert (refused.status_code, refused.json()) == (422, {"error": "photo_refused", "message": str(told.value)}), \
            name
    assert workflow.get(renewal_id).face_comparisons == 0 and registry.state.requests("compare") == []
    # A phone's PNG, sent as image/jpeg, is a PNG
    compared = http_post(base + "/face", headers={**bearer(token), "Content-Type": "image/jpeg"},
                          content=photo("kuan-weng-sam.png"), timeout=60)
    assert compared.status_code == 200 and compared.json()["steps"]["face"] is True, compared.text
    assert workflow.get(renewal_id).face_comparisons == 1


OTHER_CLIENT_KEY = "registry-key-of-another-client"
RA_KEY = "registry-key-of-this-ra-not-enrolled"


@pytest.fixture
def keyed_registry():
    """The reference registry wanting an API key; the RA's (RA_KEY) is not among its keys."""
    with RunningRegistry(RegistryState(load_identities(SAMPLE_FIXTURES), api_keys=(OTHER_CLIENT_KEY,))) as running:
        yield running


def test_a_registry_refusing_the_ra_s_credentials_uses_up_none_of_the_holder_s_tries(tmp_path, ra_clock,
                                                                                     keyed_registry, caplog):
    key_file = tmp_path / "registry-api-key"
    key_file.write_text(RA_KEY + "\n", encoding="utf-8")
    settings = RaSettings(state_dir=tmp_path, database_url=empty_database_url(tmp_path / "ra-keyed.sqlite"),
                          registry_url=keyed_registry.url, registry_api_key_file=key_file, notice_days=60)
    workflow, database = build_workflow(settings, ra_clock)
    try:
        renewal_id, token = noticed_renewal(workflow, database, ra_clock)
        with Served(build_app(workflow)) as api:
            base = f"{api.url}/renewals/{renewal_id}"

            def post(step: str, **sent) -> dict:
                answer = http_post(base + step, **{"headers": bearer(token), **sent}, timeout=60)
                assert answer.status_code == 200, answer.text
                return answer.json()

            me = {"content": photo("kuan-weng-sam.png"), "headers": {**bearer(token), "Content-Type": "image/png"}}
            post("/consent")
            for _ in range(settings.registry_lookups + 1):  # past the limit: none of them counted
                waiting = post("/registry")
                assert (waiting["state"], waiting["waiting_for"]) == ("waiting_for_registry", "registry_match")
            assert workflow.get(renewal_id).registry_lookups == 0
            keyed_registry.state.api_keys = (OTHER_CLIENT_KEY, RA_KEY)  # the registry's operator enrols the RA
            assert post("/registry")["steps"]["registry_match"] is True
            keyed_registry.state.api_keys = (OTHER_CLIENT_KEY,)  # and takes it off again
            for _ in range(settings.face_comparisons + 1):
                waiting = post("/face", **me)
                assert (waiting["state"], waiting["waiting_for"]) == ("waiting_for_registry", "face")
            assert workflow.get(renewal_id).face_comparisons == 0
            keyed_registry.state.api_keys = (OTHER_CLIENT_KEY, RA_KEY)
            assert post("/face", **me)["steps"]["face"] is True
        counted = workflow.get(renewal_id)
        assert (counted.registry_lookups, counted.face_comparisons) == (1, 1)
    finally:
        database.close()
    refusals = [r.status for r in keyed_registry.state.requests()]
    assert refusals.count(401) == settings.registry_lookups + settings.face_comparisons + 2
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("check the RA's API key or client certificate" in line for line in told) == refusals.count(401)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert RA_KEY not in logged and KUAN.id_number not in logged
