"""A refused call is counted and logged before its answer leaves, as the HTTP fronts count theirs:
a client that scrapes the metrics or reads the call log once it has its answer finds the call."""

from __future__ import annotations

from signserver.grpc_api import errors
from tests.conftest import service_with
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_signing_api import Client, code_of


def test_a_refused_call_is_reported_before_its_answer_leaves(config, tmp_path, clock, monkeypatch):
    steps = []
    report_call, abort = errors.report_call, errors._abort

    def reporting(method, status, started, context, refused_with=None):
        steps.append(("reported", method, status, refused_with.reason if refused_with else None))
        report_call(method, status, started, context, refused_with)

    async def answering(context, method, exc):
        steps.append(("answered", method))
        await abort(context, method, exc)

    monkeypatch.setattr(errors, "report_call", reporting)
    monkeypatch.setattr(errors, "_abort", answering)
    service = service_with(config, tmp_path / "signserver.db", clock)
    with ServerThread(config, service) as server, server.channel() as channel:
        anonymous = Client(channel, "ssk_not-a-real-key")
        refused = code_of(lambda: anonymous.call(anonymous.signing, "ListCredentials", account="somebody"))
        assert refused.code().name == "UNAUTHENTICATED"
        listing = [step for step in steps if "ListCredentials" in step[1]]
    assert [step[0] for step in listing] == ["reported", "answered"]
    assert listing[0][2:] == ("UNAUTHENTICATED", "APPLICATION_UNAUTHENTICATED")
