"""The RA's mailer against a real SMTP server on loopback (aiosmtpd), over TLS and STARTTLS where
TLS is meant: one connection a round, a round bounded whatever the server does, a copy sent again
after a crash recognisable as the same message, a message given up (said at ERROR) after 48 hours
or a refusal for good, the server's certificate and host name checked, a login only over TLS to a
server off this machine."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import time
from email.utils import mktime_tz, parsedate_tz

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from sqlalchemy import insert, select

from signserver.clock import epoch_seconds
from signserver.ra.errors import SettingsError, StoreUnavailable
from signserver.ra.mailer import CLAIM_SECONDS, OutboxMailer, retry_delay
from signserver.ra.settings import RaSettings, load_settings
from signserver.ra.store import repository
from signserver.ra.store.schema import outbox
from tests.conftest import Inbox, on_a_free_port, smtp_on_loopback
from tests.notify.test_smtp_tls import certificate
from tests.refused_writes import writes_refused

GIVE_UP_SECONDS = 48 * 3600  # a message not sent in 48 hours of its event is given up
ROUND_SECONDS = 10  # a round's SMTP work at most, whatever the server does


def queue(database, clock, *recipients: str) -> None:
    with database.transaction() as conn:
        repository.queue_email(conn, clock.now(), recipients or ("kuan@example.mo",), "續期通知 Renewal notice",
                               "Sign-in code: 123456")


def rows(database) -> list:
    with database.transaction() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def waiting(database) -> list:
    """The messages still to be sent (those given up stay listed for the operators)."""
    return [row for row in rows(database) if row.given_up_at is None]


class PeerInbox(Inbox):
    """An Inbox that keeps, for each message, the client's address and port (its connection)."""

    def __init__(self):
        super().__init__()
        self.peers: list = []

    async def handle_DATA(self, server, session, envelope):
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


class Refusing:
    """Refuses every recipient with ``reply``."""

    def __init__(self, reply: str):
        self.reply = reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return self.reply


@pytest.fixture
def smtp():
    inbox = PeerInbox()
    controller = smtp_on_loopback(inbox)
    inbox.port = controller.port
    yield inbox
    controller.stop()


def mailer_to(database, clock, port: int, **options) -> OutboxMailer:
    return OutboxMailer(database, clock, host="127.0.0.1", port=port, sender="ra@example.mo", **options)


def test_a_round_sends_over_one_connection(ra_database, ra_clock, smtp):
    queue(ra_database, ra_clock, "a@example.mo", "b@example.mo", "c@example.mo")
    assert mailer_to(ra_database, ra_clock, smtp.port).send_due() == 3
    assert len(smtp.messages) == 3 and len(set(smtp.peers)) == 1
    assert rows(ra_database) == []


def test_a_copy_sent_again_after_a_crash_is_the_same_message(ra_database, ra_clock, smtp):
    queue(ra_database, ra_clock)
    [row] = rows(ra_database)
    mailer = mailer_to(ra_database, ra_clock, smtp.port)
    assert mailer.send_due() == 1
    with ra_database.transaction() as conn:  # the outbox as a crash before the sending was recorded left it
        conn.execute(insert(outbox).values(**row._asdict()))
    ra_clock.advance(seconds=600)
    time.sleep(1.1)  # the wall clock moves on too
    assert mailer.send_due() == 1
    first, again = smtp.messages
    assert first["Message-ID"] == again["Message-ID"] and first["Date"] == again["Date"]
    assert mktime_tz(parsedate_tz(first["Date"])) == row.created_at  # the event's time, not the sending's
    other = mailer_to(ra_database, ra_clock, smtp.port)
    queue(ra_database, ra_clock)
    other.send_due()
    assert smtp.messages[2]["Message-ID"] != first["Message-ID"]  # another message, another id
    assert first["Message-ID"].endswith("@example.mo>")


def test_a_sending_the_database_fails_to_record_ends_the_round_and_is_not_sent_again(ra_database, ra_clock, smtp):
    """The server took the second message and the database refused to record it: the third is not
    tried, no attempt of it counted, and the second is recorded at the next round, not sent again
    once its claim has run out."""
    queue(ra_database, ra_clock, "one@example.mo", "two@example.mo", "three@example.mo")
    mailer = mailer_to(ra_database, ra_clock, smtp.port)
    with writes_refused(ra_database, "DELETE", "ra_outbox", "OLD.recipient = 'two@example.mo'"):
        with pytest.raises(StoreUnavailable):
            mailer.send_due()
        assert [m["To"] for m in smtp.messages] == ["one@example.mo", "two@example.mo"]
        left = rows(ra_database)
        assert [(r.recipient, r.attempts, r.last_error) for r in left] == [("two@example.mo", 0, ""),
                                                                            ("three@example.mo", 0, "")]
        assert left[1].next_attempt_at <= epoch_seconds(ra_clock.now())  # due again at once
    ra_clock.advance(seconds=CLAIM_SECONDS + 1)
    assert mailer.send_due() == 1
    assert [m["To"] for m in smtp.messages] == ["one@example.mo", "two@example.mo", "three@example.mo"]
    assert rows(ra_database) == []


def test_a_message_not_sent_in_48_hours_is_given_up_saying_so(ra_database, ra_clock, caplog):
    with socket.socket() as closed:  # a port nothing listens on: the SMTP server is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    queue(ra_database, ra_clock)
    mailer = mailer_to(ra_database, ra_clock, port)
    assert mailer.send_due() == 0 and rows(ra_database)[0].attempts == 1
    ra_clock.advance(seconds=GIVE_UP_SECONDS - 60)
    assert mailer.send_due() == 0 and rows(ra_database)[0].attempts == 2  # still tried
    ra_clock.advance(seconds=120)
    with caplog.at_level(logging.WARNING, logger="signserver.ra.mailer"):
        mailer.send_due()
    assert waiting(ra_database) == [] and rows(ra_database)[0].body == ""
    [given_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "gave up on e-mail" in given_up.getMessage() and "48 hours" in given_up.getMessage()


def test_a_refusal_for_good_gives_up_at_once_and_a_passing_one_is_retried(ra_database, ra_clock, caplog):
    for reply, kept in (("550 5.1.1 no such mailbox", False), ("451 4.3.0 try again later", True)):
        controller = smtp_on_loopback(Refusing(reply))
        try:
            queue(ra_database, ra_clock)
            with caplog.at_level(logging.WARNING, logger="signserver.ra.mailer"):
                assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
        finally:
            controller.stop()
        assert bool(waiting(ra_database)) is kept, reply
        assert any(r.levelno == logging.ERROR for r in caplog.records) is not kept, reply
        caplog.clear()


def test_an_address_that_is_not_one_mailbox_is_never_sent_to(ra_database, ra_clock, smtp):
    queue(ra_database, ra_clock, "a@example.mo, b@example.mo", "c@example.mo")
    assert mailer_to(ra_database, ra_clock, smtp.port).send_due() == 1
    assert [m["To"] for m in smtp.messages] == ["c@example.mo"] and waiting(ra_database) == []


def test_a_silent_server_holds_a_round_no_longer_than_its_bound(ra_database, ra_clock):
    with socket.socket() as silent:  # takes connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        queue(ra_database, ra_clock, "a@example.mo", "b@example.mo")
        started = time.monotonic()
        assert mailer_to(ra_database, ra_clock, silent.getsockname()[1]).send_due() == 0
        took = time.monotonic() - started
    assert took < ROUND_SECONDS + 3, took
    assert [r.attempts for r in rows(ra_database)] == [1, 1]  # kept, to try again


# TLS

def serve_tls(security: str, cert_pem, key_pem, handler, **options) -> Controller:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_pem, key_pem)

    def started(port: int) -> Controller:
        if security == "tls":
            controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context, **options)
        else:
            controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context,
                                    require_starttls=True, **options)
        controller.start()
        return controller
    return on_a_free_port(started)


LOOPBACK_IP = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


@pytest.mark.parametrize("security", ["tls", "starttls"])
@pytest.mark.parametrize("trusted, san, delivered", [
    (False, LOOPBACK_IP, False),
    (True, x509.DNSName("mail.example.mo"), False),  # another host's certificate
    (True, LOOPBACK_IP, True),
])
def test_the_server_certificate_and_name_are_checked(ra_database, ra_clock, tmp_path, security, trusted, san,
                                                     delivered, caplog):
    cert_pem, key_pem = certificate(tmp_path, "smtp", san)
    other_pem, _ = certificate(tmp_path, "other", LOOPBACK_IP)
    inbox = Inbox()
    controller = serve_tls(security, cert_pem, key_pem, inbox)
    try:
        queue(ra_database, ra_clock)
        mailer = mailer_to(ra_database, ra_clock, controller.port, security=security,
                           ca=cert_pem if trusted else other_pem)
        with caplog.at_level(logging.WARNING, logger="signserver.ra.mailer"):
            assert mailer.send_due() == int(delivered)
    finally:
        controller.stop()
    assert len(inbox.messages) == int(delivered)
    assert len(rows(ra_database)) == int(not delivered)
    if not delivered:
        assert any("SSLCertVerificationError" in r.getMessage() for r in caplog.records), caplog.text


def test_a_login_over_starttls_reads_the_password_file(ra_database, ra_clock, tmp_path):
    cert_pem, key_pem = certificate(tmp_path, "smtp", LOOPBACK_IP)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"smtp pass 1")

    password_file = tmp_path / "smtp-password"
    password_file.write_text("smtp pass 1\n")
    password_file.chmod(0o600)
    inbox = Inbox()
    controller = serve_tls("starttls", cert_pem, key_pem, inbox, authenticator=authenticator,
                           auth_require_tls=True, auth_required=True)
    try:
        queue(ra_database, ra_clock)
        mailer = mailer_to(ra_database, ra_clock, controller.port, security="starttls", ca=cert_pem,
                           username="ra-mailer", password_file=password_file)
        assert mailer.send_due() == 1
    finally:
        controller.stop()
    assert logins == [(b"ra-mailer", b"smtp pass 1")] and len(inbox.messages) == 1


def test_a_password_file_others_may_read_is_refused_at_start(ra_database, ra_clock, tmp_path):
    password_file = tmp_path / "smtp-password"
    password_file.write_text("smtp pass 1\n")
    password_file.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600") as refused:
        mailer_to(ra_database, ra_clock, 25, security="starttls", username="ra", password_file=password_file)
    assert "smtp pass 1" not in str(refused.value)


# Settings

def test_the_smtp_settings_and_their_defaults(tmp_path):
    settings = load_settings(environ={})
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security, settings.smtp_username,
            settings.smtp_password_file, settings.smtp_ca) == ("localhost", 25, "none", "", None, None)
    (tmp_path / "ca.pem").write_text("")
    chosen = load_settings(environ={"SIGNSERVER_RA_SMTP_HOST": "mail.example.mo", "SIGNSERVER_RA_SMTP_PORT": "465",
                                    "SIGNSERVER_RA_SMTP_SECURITY": "tls", "SIGNSERVER_RA_SMTP_USERNAME": "ra",
                                    "SIGNSERVER_RA_SMTP_PASSWORD_FILE": str(tmp_path / "pw"),
                                    "SIGNSERVER_RA_SMTP_CA": str(tmp_path / "ca.pem")})
    assert (chosen.smtp_security, chosen.smtp_username, chosen.smtp_password_file, chosen.smtp_ca) == (
        "tls", "ra", tmp_path / "pw", tmp_path / "ca.pem")
    with pytest.raises(SettingsError, match="ra.smtp_security"):
        load_settings(environ={"SIGNSERVER_RA_SMTP_SECURITY": "ssl"})


def test_a_login_without_tls_to_a_server_off_this_machine_is_refused(tmp_path):
    login = {"SIGNSERVER_RA_SMTP_USERNAME": "ra", "SIGNSERVER_RA_SMTP_PASSWORD_FILE": str(tmp_path / "pw")}
    with pytest.raises(SettingsError, match="ra.smtp_security.*in the clear"):
        load_settings(environ={**login, "SIGNSERVER_RA_SMTP_HOST": "mail.example.mo"})
    assert load_settings(environ={**login, "SIGNSERVER_RA_SMTP_HOST": "127.0.0.1"}).smtp_username == "ra"
    assert load_settings(environ={**login, "SIGNSERVER_RA_SMTP_HOST": "mail.example.mo",
                                  "SIGNSERVER_RA_SMTP_SECURITY": "starttls"}).smtp_security == "starttls"
    with pytest.raises(SettingsError, match="set both"):
        RaSettings(smtp_username="ra")


def test_the_mailer_of_the_settings_sends_as_they_say(ra_database, ra_clock, smtp, tmp_path):
    settings = RaSettings(state_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port,
                          smtp_sender="ra@example.mo", service_name="DSAJ 電子證書")
    queue(ra_database, ra_clock)
    assert OutboxMailer.from_settings(ra_database, ra_clock, settings).send_due() == 1
    assert "ra@example.mo" in smtp.messages[0]["From"] and "DSAJ" in smtp.messages[0]["From"]


def test_an_unsent_message_keeps_its_last_error_for_the_operator(ra_database, ra_clock, tmp_path, capsys):
    from signserver.ra import cli

    controller = smtp_on_loopback(Refusing("451 4.2.1 mailbox busy, try again later"))
    try:
        queue(ra_database, ra_clock)
        assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
    finally:
        controller.stop()
    [row] = rows(ra_database)
    assert "451" in row.last_error and "mailbox busy" in row.last_error
    assert "123456" not in row.last_error  # never the body (the code it carries)

    config = tmp_path / "signserver.toml"
    config.write_text(f'[ra]\ndatabase_url = "{ra_database.url}"\n', encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["--config", str(config), "outbox", "--json", "--operator", "counter-7"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["recipient"] == "kuan@example.mo" and shown["attempts"] == 1
    assert "451 4.2.1 mailbox busy" in shown["last_error"] and "body" not in shown
    assert cli.main(["--config", str(config), "outbox", "--operator", "counter-7"]) == 0
    assert "mailbox busy" in capsys.readouterr().out

    with socket.socket() as closed:  # then the server is down: the newer failure replaces it
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    ra_clock.advance(seconds=3600)
    assert mailer_to(ra_database, ra_clock, port).send_due() == 0
    [row] = rows(ra_database)
    assert row.attempts == 2 and "mailbox busy" not in row.last_error and "refused" in row.last_error.lower()


class QuotingRefusal:
    """Takes the recipients, then refuses the message, its reply quoting a line of it (as a content
    filter's may)."""

    async def handle_DATA(self, server, session, envelope):
        import email
        from email import policy

        text = email.message_from_bytes(envelope.content, policy=policy.default).get_content()
        line = next(line for line in text.splitlines() if "code" in line)
        return f"554 5.7.1 refused: {line}"


def test_a_message_given_up_stays_listed_for_the_operators_without_its_body(ra_database, ra_clock, tmp_path,
                                                                            capsys):
    from signserver.ra import cli

    controller = smtp_on_loopback(Refusing("550 5.1.1 no such mailbox"))
    try:
        queue(ra_database, ra_clock)
        assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
        ra_clock.advance(seconds=7200)
        assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
    finally:
        controller.stop()
    [row] = rows(ra_database)
    assert row.given_up_at == int(ra_clock.now().timestamp()) - 7200 and row.attempts == 1  # never tried again
    assert row.body == "" and "550 5.1.1 no such mailbox" in row.last_error  # the code it carried is gone

    config = tmp_path / "signserver.toml"
    config.write_text(f'[ra]\ndatabase_url = "{ra_database.url}"\n', encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["--config", str(config), "outbox", "--json", "--operator", "counter-7"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["recipient"] == "kuan@example.mo" and shown["given_up_at"] and "body" not in shown
    assert cli.main(["--config", str(config), "outbox", "--operator", "counter-7"]) == 0
    assert "given up" in capsys.readouterr().out


def test_a_refusal_that_quotes_the_message_keeps_none_of_its_secrets(ra_database, ra_clock, caplog):
    controller = smtp_on_loopback(QuotingRefusal())
    try:
        queue(ra_database, ra_clock)
        with caplog.at_level(logging.INFO, logger="signserver.ra.mailer"):
            assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
            ra_clock.advance(seconds=GIVE_UP_SECONDS)
            assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
    finally:
        controller.stop()
    [row] = rows(ra_database)
    assert row.given_up_at and "554 5.7.1 refused" in row.last_error
    assert "123456" not in row.last_error and "123456" not in caplog.text


def test_an_operator_marks_a_message_given_up_as_dealt_with(ra_database, ra_clock, tmp_path, capsys):
    from signserver.ra import cli
    from tests.ra.conftest import KUAN, opened_renewal

    renewal = opened_renewal(ra_database, KUAN, ra_clock.now())
    with ra_database.transaction() as conn:
        repository.queue_email(conn, ra_clock.now(), ["kuan@example.mo"], "Renewal notice", "Access key: 123456",
                               renewal_id=renewal.id)
    controller = smtp_on_loopback(Refusing("550 5.1.1 no such mailbox"))
    try:
        assert mailer_to(ra_database, ra_clock, controller.port).send_due() == 0
    finally:
        controller.stop()
    queue(ra_database, ra_clock, "later@example.mo")  # still waiting: nothing to mark
    given_up, waiting = rows(ra_database)
    assert given_up.given_up_at and given_up.renewal_id == renewal.id and waiting.given_up_at is None

    config = tmp_path / "signserver.toml"
    config.write_text(f'[ra]\ndatabase_url = "{ra_database.url}"\n', encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["--config", str(config), "outbox", "--json", "--operator", "counter-7"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["renewal_id"] == renewal.id and shown[0]["account"] == KUAN.account
    assert shown[1]["renewal_id"] is None and shown[1]["dismissed_at"] is None

    assert cli.main(["--config", str(config), "outbox", "--dismiss", str(given_up.id), "--json",
                     "--operator", "counter-7"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["id"] == given_up.id and done["dismissed_by"] == "counter-7" and done["dismissed_at"]
    assert "123456" not in json.dumps(done)
    with ra_database.transaction() as conn:
        state = repository.outbox_state(conn)
        [entry] = [e for e in repository.audit_entries(conn) if e["action"] == "email_dismissed"]
    assert state["given_up"] == 0 and state["dismissed"] == 1 and state["given_up_recent"] == []
    assert entry["actor"] == "counter-7" and entry["renewal_id"] == renewal.id
    assert f"email={given_up.id}" in entry["detail"] and "kuan@example.mo" in entry["detail"]

    assert cli.main(["--config", str(config), "outbox", "--operator", "counter-7"]) == 0
    assert "dealt with by counter-7" in capsys.readouterr().out
    for number, reason in ((given_up.id, "email_dismissed_already"), (waiting.id, "email_not_given_up"),
                           (given_up.id + 100, "email_not_given_up")):
        assert cli.main(["--config", str(config), "outbox", "--dismiss", str(number), "--json",
                         "--operator", "counter-7"]) == 1
        out, err = capsys.readouterr()
        assert json.loads(out)["reason"] == reason and len(err.strip().splitlines()) == 1
    assert cli.main(["--config", str(config), "outbox", "--dismiss", "9" * 40, "--operator", "counter-7"]) == 2
    assert "Traceback" not in capsys.readouterr().err


class BusyFor(PeerInbox):
    """Puts off (450, try later) the recipients in ``busy``; takes the others."""

    def __init__(self):
        super().__init__()
        self.busy: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.busy:
            return "450 4.2.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_message_put_off_holds_back_the_later_ones_to_its_address_alone(ra_database, ra_clock):
    """A holder reads the RA's messages in the order they were written: a message the server put
    off is tried again after a while, and the later messages to the same address wait for it, in
    later rounds too. Messages to other addresses do not."""
    inbox = BusyFor()
    controller = smtp_on_loopback(inbox)
    try:
        mailer = mailer_to(ra_database, ra_clock, controller.port)

        def queue_one(body: str, *recipients: str) -> None:
            with ra_database.transaction() as conn:
                repository.queue_email(conn, ra_clock.now(), recipients, "續期通知 Renewal notice", body)

        inbox.busy = {"one@example.mo"}
        queue_one("first", "one@example.mo")
        assert mailer.send_due() == 0  # put off
        inbox.busy = set()
        queue_one("second", "one@example.mo")
        queue_one("to another", "two@example.mo")
        assert mailer.send_due() == 1
        assert [(m["To"], m.get_content().split("\n")[0]) for m in inbox.messages] == [("two@example.mo", "to another")]
        assert mailer.send_due() == 0  # the first waits out its retry delay, the second behind it

        ra_clock.advance(seconds=retry_delay(1).total_seconds())
        while mailer.send_due():
            pass
        assert [(m["To"], m.get_content().split("\n")[0]) for m in inbox.messages[1:]] == [
            ("one@example.mo", "first"), ("one@example.mo", "second")]
    finally:
        controller.stop()
