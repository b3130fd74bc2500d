"""Every e-mail the core sends says the same in Traditional Chinese, Portuguese and English, with
every placeholder filled."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from signserver.notify.outbox import TEMPLATES, queue_email
from signserver.store.schema import outbox

# The values each template's callers give (signserver/accounts, signserver/ca/expiry_notices.py).
FILLED_BY = {
    "account_locked": {"holder_name", "username", "until"},
    "account_unlocked": {"holder_name", "username", "time"},
    "password_changed": {"holder_name", "username", "time"},
    "password_reset": {"holder_name", "username", "time"},
    "recovery_code_replaced": {"holder_name", "username", "time"},
    "certificate_expiring": {"holder_name", "serial", "expiry"},
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def sections(name: str) -> tuple[list[str], list[str]]:
    subject, _, body = (TEMPLATES / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    return subject.split(" / "), re.split(r"\n(?=Caro\(a\) |Dear )", body.strip())


def test_every_template_is_known():
    assert sorted(p.stem for p in TEMPLATES.glob("*.txt")) == sorted(FILLED_BY)


@pytest.mark.parametrize("name", sorted(FILLED_BY))
def test_a_template_says_it_in_three_languages_with_the_same_placeholders(name):
    subject, body = sections(name)
    assert len(subject) == 3 and CJK.search(subject[0]) and not CJK.search(subject[1] + subject[2])
    assert len(body) == 3, body
    chinese, portuguese, english = body
    assert CJK.search(chinese) and portuguese.startswith("Caro(a) ") and english.startswith("Dear ")
    for section in body:
        assert set(re.findall(r"\$\{?(\w+)", section)) == FILLED_BY[name], section


@pytest.mark.parametrize("name", sorted(FILLED_BY))
def test_a_queued_message_has_every_placeholder_filled(name, service, clock):
    values = {key: f"<{key}>" for key in FILLED_BY[name]}
    with service.database.transaction() as conn:
        assert queue_email(conn, clock.now(), ["holder@example.mo"], name, **values) == 1
        row = conn.execute(select(outbox).order_by(outbox.c.id.desc())).first()
        conn.rollback()
    assert "$" not in row.subject + row.body
    assert all(row.body.count(value) >= 3 for value in values.values())
