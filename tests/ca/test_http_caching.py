"""The CRLs' HTTP caching (RFC 5019 6.2's header fields, RFC 9111) and conditional requests
(RFC 7232), over a real server on a free port."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from cryptography import x509

from signserver.http.ca_front import CaHttpFront
from tests.ca.test_http_hardening import FrontThread


@pytest.fixture(scope="module")
def http(ca_service):
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0")) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield client


def http_date(moment) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


@pytest.mark.parametrize("authority", ["issuing", "root"])
def test_a_crl_carries_its_validity_as_caching_headers(http, ca_clock, authority):
    answer = http.get(f"/crl/{authority}.crl")
    assert answer.status_code == 200
    crl = x509.load_der_x509_crl(answer.content)
    assert answer.headers["Last-Modified"] == http_date(crl.last_update_utc)
    assert answer.headers["Expires"] == http_date(crl.next_update_utc)
    assert answer.headers["ETag"].startswith('"') and answer.headers["ETag"].endswith('"')
    directives = [part.strip() for part in answer.headers["Cache-Control"].split(",")]
    assert {"public", "no-transform", "must-revalidate"} <= set(directives)
    max_age = int(next(part for part in directives if part.startswith("max-age="))[len("max-age="):])
    assert 0 < max_age <= (crl.next_update_utc - ca_clock.now()).total_seconds()


def test_a_crl_not_changed_since_is_answered_304(http):
    first = http.get("/crl/issuing.crl")
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]

    unchanged = http.get("/crl/issuing.crl", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == etag
    assert unchanged.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert unchanged.headers["Expires"] == first.headers["Expires"]
    assert http.get("/crl/issuing.crl", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert http.get("/crl/issuing.crl", headers={"If-None-Match": "*"}).status_code == 304
    assert http.get("/crl/issuing.crl", headers={"If-Modified-Since": last_modified}).status_code == 304

    assert http.get("/crl/issuing.crl", headers={"If-None-Match": '"other"'}).status_code == 200
    assert http.get("/crl/issuing.crl", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
                    ).status_code == 200
    assert http.get("/crl/issuing.crl", headers={"If-Modified-Since": "not a date"}).status_code == 200
    # If-None-Match decides when both are sent (RFC 7232 6).
    both = http.get("/crl/issuing.crl", headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified})
    assert both.status_code == 200 and both.content == first.content


def test_a_new_crl_is_sent_to_a_client_holding_the_old_one(http, ca_service, ca_clock):
    old = http.get("/crl/issuing.crl")
    ca_clock.advance(seconds=1)
    ca_service.ca.publish_crls()

    new = http.get("/crl/issuing.crl", headers={"If-None-Match": old.headers["ETag"],
                                                "If-Modified-Since": old.headers["Last-Modified"]})
    assert new.status_code == 200 and new.headers["ETag"] != old.headers["ETag"]
    assert (x509.load_der_x509_crl(new.content).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            > x509.load_der_x509_crl(old.content).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
