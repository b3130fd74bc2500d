"""The notice e-mail's link when the RA listens on port 0 (a free port chosen by `signserver ra serve`)
and ra.public_url is not set: the commands, each its own process, link their notices to the port
the running RA bound, and refuse to send a notice without its link when no RA runs."""

from __future__ import annotations

import re
import stat
import time

import httpx

from tests import cli_forkserver
from tests.conftest import LOOPBACK_TLS
from tests.ra.conftest import KUAN
from tests.ra.running import (SIGNSERVER, confirm_with_notice, enrol, ra_command, register, start_ra, stop)
from tests.ra.running import core, eid, inbox, ra_files  # noqa: F401 (fixtures)

LINK = re.compile(r"(https?://[^/\s]+)/notice/([0-9a-f]{32})/([A-Za-z0-9_\-]{20,})")


def ra_refused(ra_process, *arguments: str):
    """`signserver ra ARGUMENTS` against the RA's settings, expected to fail; its result."""
    result = cli_forkserver.run([str(SIGNSERVER), "--config", str(ra_process.config), "ra", *arguments],
                                env=ra_process.env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout
    return result


def notice_link(notice: str) -> re.Match:
    found = LINK.search(notice)
    assert found, f"the notice carries no link to the RA's pages:\n{notice}"
    return found


def test_the_commands_link_their_notices_to_the_port_the_running_ra_bound(served, ra_files, registry, inbox, core,
                                                                         tmp_path):
    ra = start_ra(tmp_path, served, ra_files, registry, inbox)  # listen port 0, no public_url
    try:
        issued = enrol(core, "ra-link-port-0", "cloud-signature-government")
        register(ra, "ra-link-port-0")
        confirmed, notice = confirm_with_notice(ra, inbox, issued.serial)  # `ra confirm-renewal`, its own process
        link = notice_link(notice)
        assert link.group(1) == ra.public_url and link.group(2) == confirmed["id"], notice
        opened = httpx.get(link.group(0), timeout=30, verify=LOOPBACK_TLS)  # the RA's, which knows the link
        assert opened.status_code == 303 and opened.headers["location"] == "/notice", opened.text

        seen = len(inbox.messages)
        ra_command(ra, "resend-notice", confirmed["id"])
        again = notice_link(inbox.wait_for(KUAN.emails[0], "Certificate renewal notice", seen).get_content())
        assert again.group(1) == ra.public_url and again.group(3) != link.group(3)

        recorded = tmp_path / "state" / "ra" / "serving.json"
        assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
    finally:
        stop(ra)
    assert not recorded.exists()  # a stopped RA's address is not used


def test_without_a_running_ra_a_notice_without_its_link_is_refused(served, ra_files, registry, inbox, core,
                                                                   tmp_path):
    ra = start_ra(tmp_path, served, ra_files, registry, inbox)
    try:
        issued = enrol(core, "ra-link-stopped", "cloud-signature-government")
        register(ra, "ra-link-stopped")
        confirmed, _ = confirm_with_notice(ra, inbox, issued.serial)
        waiting = enrol(core, "ra-link-unconfirmed", "cloud-signature-government")
        register(ra, "ra-link-unconfirmed")
    finally:
        stop(ra)

    seen, queued = len(inbox.messages), ra_command(ra, "outbox")
    resent = ra_refused(ra, "resend-notice", confirmed["id"])
    assert resent.returncode == 78 and "ra.public_url" in resent.stderr and "Traceback" not in resent.stderr
    refused = ra_refused(ra, "confirm-renewal", waiting.serial)
    assert refused.returncode == 78 and "ra.public_url" in refused.stderr
    assert ra_command(ra, "outbox") == queued  # nothing queued to go out without its link
    assert ra_command(ra, "notices") == {"notices": 0}  # nothing due: nothing to refuse
    shown = {r["serial"]: r for r in ra_command(ra, "renewals")}
    assert shown[waiting.serial]["state"] == "awaiting_confirmation"  # the refusal changed nothing
    time.sleep(0.5)
    assert len(inbox.messages) == seen


def test_the_address_of_a_killed_ra_is_not_used(served, ra_files, registry, inbox, core, tmp_path):
    ra = start_ra(tmp_path, served, ra_files, registry, inbox)
    try:
        issued = enrol(core, "ra-link-killed", "cloud-signature-government")
        register(ra, "ra-link-killed")
        confirmed, _ = confirm_with_notice(ra, inbox, issued.serial)
    finally:
        ra.kill()  # no chance to remove what it recorded
        ra.wait(30)

    assert (tmp_path / "state" / "ra" / "serving.json").exists()
    queued = ra_command(ra, "outbox")
    refused = ra_refused(ra, "resend-notice", confirmed["id"])
    assert refused.returncode == 78 and "ra.public_url" in refused.stderr
    assert ra_command(ra, "outbox") == queued
