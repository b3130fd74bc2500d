"""Registering an application, or giving it a client certificate, is an operator's security
decision (one may sign for every account without an OTP): each is appended to the audit log, with
the policy it gives and who gave it, and never the API key nor its digest."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from signserver.errors import NotFound
from signserver.store.schema import audit_log
from tests.conftest import enrol

FINGERPRINT = "cd" * 32
OTHER = "ef" * 32


def _records(service) -> list:
    with service.database.read() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()


def _about(service, name: str) -> list[tuple[str, str, dict]]:
    return [(r.event, r.actor, json.loads(r.detail)) for r in _records(service) if r.subject == name]


def test_a_registration_is_recorded_with_its_policy_and_no_api_key(fresh_service):
    applications = fresh_service.applications
    _, api_key = applications.create("open-portal", otp_required=False, client_certificate_sha256=FINGERPRINT,
                                      one_call_signing=False, operator="operator:test")
    assert _about(fresh_service, "open-portal") == [("application.created", "operator:test", {
        "otp_required": False, "accounts": "all", "client_certificate_sha256": FINGERPRINT, "api_key": True,
        "two_step_only": True})]
    stored = "".join(r.detail + r.subject + r.actor for r in _records(fresh_service))
    assert api_key not in stored and hashlib.sha256(api_key.encode()).hexdigest() not in stored


def test_a_registration_names_the_accounts_it_serves(fresh_service):
    enrol(fresh_service, "ieng")
    fresh_service.applications.create("narrow-portal", accounts_served=("ieng",), with_api_key=False,
                                      client_certificate_sha256=FINGERPRINT)
    [(event, _, detail)] = _about(fresh_service, "narrow-portal")
    assert event == "application.created" and detail["accounts"] == ["ieng"] and detail["otp_required"] is True
    assert detail["api_key"] is False and detail["two_step_only"] is False


def test_a_refused_registration_leaves_no_record(fresh_service):
    with pytest.raises(NotFound):
        fresh_service.applications.create("nobody-portal", accounts_served=("no-such-account",))
    assert _about(fresh_service, "nobody-portal") == []


def test_a_client_certificate_set_is_recorded_with_the_one_it_replaces(fresh_service):
    applications = fresh_service.applications
    applications.set_client_certificate("cert-portal", FINGERPRINT, operator="operator:test")
    applications.set_client_certificate("cert-portal", OTHER, operator="operator:test")
    records = _about(fresh_service, "cert-portal")
    assert [event for event, _, _ in records] == ["application.created", "application.certificate_set"]
    assert records[0][2]["client_certificate_sha256"] == FINGERPRINT and records[0][2]["api_key"] is False
    assert records[1] == ("application.certificate_set", "operator:test",
                          {"client_certificate_sha256": OTHER, "replaced_sha256": FINGERPRINT})
