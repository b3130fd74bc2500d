"""SignHash load from a native client: gRPC's C++ core sending requests serialised here.

The Python clients of ``load.run_load`` spend about 0.4 of a raw RSA-2048 signature's CPU on each
single-digest call, on the same two cores as the server they measure; ``benchmarks/native/
unary_load.cc`` spends less than half of that, so that more of the machine is left to the server.
It is built here with Debian's g++ and libgrpc++-dev (``make`` installs them) into
``benchmarks/native/build/`` the first time, and again when its source changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchmarks import load
from signserver.v1 import signing_pb2, signing_pb2_grpc

SOURCE = Path(__file__).parent / "native" / "unary_load.cc"
BUILD = Path(__file__).parent / "native" / "build"
SIGN_HASH = "/signserver.v1.SigningService/SignHash"


class NativeClientUnavailable(RuntimeError):
    """The native client cannot be built here (no g++ or no libgrpc++-dev)."""


def binary() -> Path:
    """The load generator, built unless a build of this very source is there (its name carries
    the source's hash).

    Raises: NativeClientUnavailable: the compiler or gRPC's C++ library is missing, or the
            build failed (its output in the message).
    """
    built = BUILD / f"unary_load-{hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]}"
    if built.exists():
        return built
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True,
                               check=True).stdout.split()
        BUILD.mkdir(exist_ok=True)
        partial = built.with_suffix(".partial")
        subprocess.run(["g++", "-O2", "-std=c++17", "-pthread", "-o", str(partial), str(SOURCE), *flags],
                       capture_output=True, text=True, check=True)
    except FileNotFoundError as e:
        raise NativeClientUnavailable(f"{e.filename} is missing: apt-get install g++ pkg-config libgrpc++-dev") from e
    except subprocess.CalledProcessError as e:
        raise NativeClientUnavailable(f"{' '.join(e.cmd[:2])} failed: {e.stderr.strip()[-2000:]}") from e
    partial.rename(built)  # whole or not at all: another run never finds half a binary
    for older in BUILD.glob("unary_load-*"):
        if older != built:
            older.unlink(missing_ok=True)
    return built


def sign_hash_requests(target: load.Target, batch: int, calls: int, name: str,
                       algorithm: str = "rsa-pkcs1v15-sha256") -> list[bytes]:
    """``calls`` serialised SignHashRequests of ``batch`` digests each, for the target's holder,
    spending tokens authorised now (``load.TOKEN_DIGESTS`` digests each; ``name`` keeps the
    digests apart from any other caller's)."""
    per_token = load.TOKEN_DIGESTS // batch
    requests = []
    with target.channel() as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        for round_ in range(math.ceil(calls / per_token)):
            digests = [hashlib.sha256(f"{name}-{round_}-{i}".encode()).digest() for i in range(per_token * batch)]
            token = load._authorize(stub, target, digests)
            requests += [signing_pb2.SignHashRequest(
                credential_id=target.credential, activation_token=token, signature_algorithm=algorithm,
                digests=digests[start:start + batch]).SerializeToString()
                for start in range(0, len(digests), batch)]
    return requests[:calls]


def sign_hash_load(name: str, target: load.Target, batch: int, concurrency: int, seconds: float,
                   most_per_second: float, window_probe: Callable[[], float] | None = None) -> load.LoadResult:
    """SignHash of ``batch`` digests per call from ``concurrency`` callers of the native client,
    each given requests enough for ``most_per_second`` calls a second, a rate the server cannot
    exceed (the callers share it), authorised beforehand. Raises: as :func:`run_native_load`."""
    calls = math.ceil(seconds * most_per_second / concurrency) + 1
    requests = [sign_hash_requests(target, batch, calls, f"native-{time.time_ns()}-{caller}")
                for caller in range(concurrency)]
    return run_native_load(name, target, requests, seconds, batch, window_probe)


def run_native_load(name: str, target: load.Target, requests: list[list[bytes]], seconds: float,
                    signatures_per_call: int = 1, window_probe: Callable[[], float] | None = None) -> load.LoadResult:
    """One caller of the native client for each list of serialised ``requests``, each with a
    connection of its own, spread over the server's workers as ``load.run_load``'s are, sending
    its requests in order, one call each, all over the same window of ``seconds``
    (``window_probe``: as in ``load.run_load``). The result counts ``signatures_per_call`` for
    each call answered, and keeps the client's CPU seconds in the window.

    Raises: NativeClientUnavailable: see :func:`binary`; RuntimeError: a call was refused, or a
            caller ran out of requests before the window closed (the figure would be too low).
    """
    program = binary()
    with tempfile.TemporaryDirectory(prefix="signserver-native-load-") as folder:
        folder = Path(folder)
        for part, pem in zip(("root", "key", "chain"), target.credentials):
            (folder / f"{part}.pem").write_bytes(pem)
        start_at = time.time() + 2.0  # the client connects, and finds its workers, before the window
        lines = [f"address {target.address}", f"workers {target.workers}", f"method {SIGN_HASH}",
                 f"start_at {start_at:.6f}", f"seconds {seconds}",
                 *(f"{part} {folder / f'{part}.pem'}" for part in ("root", "key", "chain")),
                 *("client " + ",".join(r.hex() for r in each) for each in requests)]
        (folder / "spec").write_text("\n".join(lines) + "\n")
        process = subprocess.Popen([str(program), str(folder / "spec")], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        readings: list[float] = []
        if window_probe:
            load._read_at(window_probe, (start_at, start_at + seconds), readings)
        out, err = process.communicate(timeout=seconds + 120)
    if process.returncode != 0:
        raise RuntimeError(f"the native client failed ({process.returncode}): {err.strip()[-2000:]}")
    answer = json.loads(out)
    if answer["refusals"]:
        raise RuntimeError(f"{answer['refusals']} calls of the native client were refused: {answer['first_refusal']}")
    if answer["exhausted"]:
        raise RuntimeError(f"{answer['exhausted']} of the native client's callers ran out of requests")
    return load.LoadResult(name, answer["calls"] * signatures_per_call, seconds, answer["latencies"],
                           in_window=readings[1] - readings[0] if len(readings) == 2 else None,
                           client_cpu=answer["cpu_seconds"])
