"""No request a client can send makes the server fail: every RPC of every service in
proto/signserver/v1, found from the generated descriptors (a new RPC is covered the day it is
added), gets generated messages (and raw random bytes as its serialized request; a stream of
either for a streaming RPC) from each kind of caller. No call may end INTERNAL or UNKNOWN, and the
server must still answer Health after each."""

from __future__ import annotations

import collections
import functools
import importlib
import pkgutil

import grpc
import pyotp
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

import signserver.v1
from tests.fuzz.conftest import SERVER_FAULTS, FuzzWorld, fuzz_settings

# About 60 s for the whole file on a loaded 2-core machine: most calls are refused in a
# millisecond or two, those that get past authentication cost an argon2 check (~25 ms) or a
# signature (~150 ms).
MESSAGE_EXAMPLES = 120
RAW_EXAMPLES = 30
MAX_DEPTH = 3
CALL_SECONDS = 60

F = FieldDescriptor


def every_rpc() -> list[MethodDescriptor]:
    """Every method of every service in the generated modules of signserver.v1."""
    methods = []
    for module_info in pkgutil.iter_modules(signserver.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"signserver.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return sorted(methods, key=lambda m: m.full_name)


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


# --- values -------------------------------------------------------------------------------------

ODD_TEXT = [
    "", " ", "0", "-1", "1e308", "NaN", "０１２３４５", "١٢٣٤٥٦", "۱۲۳۴۵۶", "१२३४५६", "𝟏𝟐𝟑𝟒𝟓𝟔", "߁߂߃߄߅߆",
    "\x00", "\x00123456", "\u202e", "數碼簽署", "😀" * 64, "a" * 257, "../../etc/passwd", "%s%n%x",
    "' OR 1=1 --", "B-", "otpauth://totp/x?secret=AAAA", "Etc/GMT+99", "-----BEGIN CERTIFICATE-----",
]
HUGE_TEXT = "x" * 1_000_000
ODD_BYTES = [b"", bytes(32), b"\xff" * 32, b"%PDF-1.7\n", b"0\x80", b"\x30\x82\xff\xff"]
HUGE_BYTES = bytes(1 << 20)
INTEGER_EDGES = [0, 1, -1, 2, 7, 100, 2**31 - 1, 2**31, -(2**31), 2**32 - 1, 2**32, 2**63 - 1, -(2**63),
                 2**64 - 1]
INTEGER_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_SINT32: (-(2**31), 2**31 - 1), F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1), F.TYPE_SINT64: (-(2**63), 2**63 - 1), F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
}


def text_values(small: bool) -> st.SearchStrategy[str]:
    utf8 = st.characters(codec="utf-8")
    options = [st.sampled_from(ODD_TEXT), st.text(utf8, max_size=40),
               st.text(st.characters(categories=["Nd"]), min_size=1, max_size=12)]
    return st.one_of(*options) if small else st.one_of(*options, st.just(HUGE_TEXT))


def byte_values(small: bool) -> st.SearchStrategy[bytes]:
    options = [st.sampled_from(ODD_BYTES), st.binary(max_size=64), st.binary(min_size=32, max_size=32)]
    return st.one_of(*options) if small else st.one_of(*options, st.just(HUGE_BYTES))


def scalar_values(field: FieldDescriptor, small: bool) -> st.SearchStrategy:
    """Any value the field's wire type can carry, edges first."""
    if field.type == F.TYPE_STRING:
        return text_values(small)
    if field.type == F.TYPE_BYTES:
        return byte_values(small)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == F.TYPE_DOUBLE:
        return st.floats()
    if field.type == F.TYPE_ENUM:  # proto3 enums are open: unknown numbers travel too
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 4, 99, 2**31 - 1, -(2**31)]))
    low, high = INTEGER_RANGES[field.type]
    return st.one_of(st.sampled_from([v for v in INTEGER_EDGES if low <= v <= high]), st.integers(low, high))


class RequestStrategies:
    """The strategies for the requests of one module's ``seeds``, each made once and kept:
    Hypothesis validates a strategy when it first draws from it, which cost more than the draws
    themselves when the strategies of a message's fields were made again for every example."""

    def __init__(self, seeds: dict):
        self.seeds = seeds

    @functools.cache
    def seeded(self, field: FieldDescriptor, realistic: bool) -> st.SearchStrategy:
        """The field's realistic values (the real account, password, credential...), and unless
        ``realistic`` anything else too."""
        generic = scalar_values(field, small=False)
        if field.name not in self.seeds:
            return generic
        values = self.seeds[field.name]
        known = values if isinstance(values, st.SearchStrategy) else st.sampled_from(values)
        return known if realistic else st.one_of(known, generic)

    @functools.cache
    def message(self, descriptor: Descriptor, depth: int = 0, oneof_choice: str | None = None,
                realistic: bool = False) -> st.SearchStrategy:
        """A message of ``descriptor`` with any subset of its fields set to any values; in each
        oneof none or one member set (``oneof_choice`` "first" or "last" forces that member). A
        ``realistic`` message has every field with a realistic value set to one, so that it gets
        past authentication and into the code behind it; its other fields are as arbitrary as ever."""
        return _messages(self, descriptor, depth, oneof_choice, realistic)

    @functools.cache
    def oneof_member(self, oneof) -> st.SearchStrategy:
        return st.sampled_from([None, *oneof.fields])

    @functools.cache
    def field_values(self, field: FieldDescriptor, depth: int, realistic: bool) -> st.SearchStrategy | None:
        """What a field is set to: a value, or for a repeated field a list of them (None: a
        message field past MAX_DEPTH, left unset)."""
        realistic_here = realistic and field.name in self.seeds
        if field.type == F.TYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                return None
            values = self.message(field.message_type, depth + 1, realistic=realistic)
            return st.lists(values, max_size=3) if field.is_repeated else values
        if field.is_repeated:
            few = st.lists(self.seeded(field, realistic),
                           min_size=1 if realistic_here else 0, max_size=3)
            many = st.lists(scalar_values(field, small=True), min_size=100, max_size=130)  # past the limits
            return few if realistic_here else st.one_of(few, many)
        return self.seeded(field, realistic)

    def requests(self, method: MethodDescriptor) -> st.SearchStrategy:
        """Serialized requests for the method: one for a unary request, a list for a streaming
        one. A stream is arbitrary, or shaped as the service expects (its first message's oneof
        on the first member, a header; the rest on the last, chunks), so that it reaches past the
        first check."""
        def serialized(**options) -> st.SearchStrategy[bytes]:
            either = st.one_of(*(self.message(method.input_type, realistic=realistic, **options)
                                 for realistic in (False, True)))
            return either.map(lambda m: m.SerializeToString())

        if not method.client_streaming:
            return serialized()
        shaped = st.tuples(serialized(oneof_choice="first"), st.lists(serialized(oneof_choice="last"), max_size=3))
        return st.one_of(st.lists(serialized(), max_size=4), shaped.map(lambda t: [t[0], *t[1]]))


@st.composite
def _messages(draw, strategies: RequestStrategies, descriptor: Descriptor, depth: int, oneof_choice: str | None,
              realistic: bool):
    message = message_factory.GetMessageClass(descriptor)()
    for oneof in descriptor.oneofs:
        if oneof_choice == "first":
            member = oneof.fields[0]
        elif oneof_choice == "last":
            member = oneof.fields[-1]
        else:
            member = draw(strategies.oneof_member(oneof))
        if member is not None:
            _set(draw, message, member, strategies, depth, realistic)
    for field in descriptor.fields:
        if field.containing_oneof is None and (realistic and field.name in strategies.seeds or draw(st.booleans())):
            _set(draw, message, field, strategies, depth, realistic)
    return message


def _set(draw, message, field: FieldDescriptor, strategies: RequestStrategies, depth: int, realistic: bool) -> None:
    values = strategies.field_values(field, depth, realistic)
    if values is None:
        return
    if field.type == F.TYPE_MESSAGE and field.is_repeated:
        for value in draw(values):
            getattr(message, field.name).add().CopyFrom(value)
    elif field.type == F.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(draw(values))
    elif field.is_repeated:
        getattr(message, field.name).extend(draw(values))
    else:
        setattr(message, field.name, draw(values))


def raw_requests(method: MethodDescriptor) -> st.SearchStrategy:
    one = st.binary(max_size=200)
    return st.lists(one, max_size=4) if method.client_streaming else one


# --- calling ------------------------------------------------------------------------------------

# What a client says of a status it could not read: details quoting too much of the request.
UNREADABLE_ANSWER = "received metadata size exceeds"
# Answers that end a call at the door: a run made only of these tested authentication alone.
AT_THE_DOOR = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def call(channel: grpc.Channel, method: MethodDescriptor, request, metadata) -> tuple[grpc.StatusCode, str]:
    """Make the call with already serialized request bytes; read the whole answer; its status."""
    path = path_of(method)
    kind = ("stream" if method.client_streaming else "unary") + "_" + \
           ("stream" if method.server_streaming else "unary")
    callable_ = getattr(channel, kind)(path, request_serializer=None, response_deserializer=None)
    argument = iter(request) if method.client_streaming else request
    try:
        answer = callable_(argument, metadata=metadata, timeout=CALL_SECONDS)
        if method.server_streaming:
            list(answer)
    except grpc.RpcError as refused:
        return refused.code(), refused.details() or ""
    return grpc.StatusCode.OK, ""


def callers(world: FuzzWorld, method: MethodDescriptor) -> st.SearchStrategy:
    """Mostly the caller the service is for (the RA for CertificateService, an application for the
    rest), sometimes any other."""
    meant = "ra" if method.containing_service.name == "CertificateService" else "plain-app"
    preferred = next(c for c in world.callers if c.name == meant)
    return st.one_of(st.just(preferred), st.sampled_from(world.callers))


def check(world: FuzzWorld, method: MethodDescriptor, caller, request) -> grpc.StatusCode:
    code, details = call(caller.channel, method, request, caller.metadata)
    assert code not in SERVER_FAULTS and code is not grpc.StatusCode.DEADLINE_EXCEEDED, \
        f"{path_of(method)} from {caller.name} ended {code.name}"
    assert UNREADABLE_ANSWER not in details, f"{path_of(method)} from {caller.name}: {details}"
    world.assert_serving()
    return code


@pytest.fixture(scope="module")
def strategies(fuzz_world) -> RequestStrategies:
    values = dict(fuzz_world.seeds)
    otp_seed = fuzz_world.otp_seed
    values["otp"] = st.builds(lambda: pyotp.TOTP(otp_seed).now())
    return RequestStrategies(values)


@pytest.mark.parametrize("method", every_rpc(), ids=lambda m: m.full_name.removeprefix("signserver.v1."))
def test_generated_messages_never_fail_the_server(fuzz_world, strategies, method):
    codes = collections.Counter()
    requests = strategies.requests(method)

    @fuzz_settings(MESSAGE_EXAMPLES)
    @given(data=st.data())
    def run(data):
        caller = data.draw(callers(fuzz_world, method), label="caller")
        codes[check(fuzz_world, method, caller, data.draw(requests, label="request"))] += 1

    run()
    assert set(codes) - AT_THE_DOOR, f"no call got past authentication: {codes}"


@pytest.mark.parametrize("method", every_rpc(), ids=lambda m: m.full_name.removeprefix("signserver.v1."))
def test_random_bytes_never_fail_the_server(fuzz_world, method):
    @fuzz_settings(RAW_EXAMPLES)
    @given(data=st.data())
    def run(data):
        caller = data.draw(callers(fuzz_world, method), label="caller")
        check(fuzz_world, method, caller, data.draw(raw_requests(method), label="request"))

    run()


def test_every_service_is_covered():
    """The enumeration finds each service of the .proto files, so none is skipped silently."""
    services = {m.containing_service.name for m in every_rpc()}
    assert services == {"AccountService", "CertificateService", "DocumentService", "InfoService", "SigningService"}
    assert len(every_rpc()) >= 18


def test_a_refusal_that_quotes_huge_input_still_reaches_the_caller(fuzz_world):
    """The refusal of a megabyte-long PAdES level quotes it: the status still arrives, cut short,
    rather than a transport error for a header over the client's limit."""
    from signserver.v1 import document_pb2, document_pb2_grpc

    caller = next(c for c in fuzz_world.callers if c.name == "plain-app")
    header = document_pb2.SignPdfHeader(account=fuzz_world.seeds["account"][0], password="x",
                                        credential_id=fuzz_world.seeds["credential_id"][0], level=HUGE_TEXT)
    requests = [document_pb2.SignPdfRequest(header=header), document_pb2.SignPdfRequest(chunk=b"%PDF-1.7\n")]
    with pytest.raises(grpc.RpcError) as refused:
        list(document_pb2_grpc.DocumentServiceStub(caller.channel).SignPdf(
            iter(requests), metadata=caller.metadata, timeout=CALL_SECONDS))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "unknown PAdES level" in refused.value.details() and len(refused.value.details()) <= 1000
