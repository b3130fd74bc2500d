"""A multi-process load generator: client processes, each with threads, each thread its own
connection and stream of calls, all measuring over the same window; latencies of every call are
kept."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from signserver.v1 import info_pb2, info_pb2_grpc, signing_pb2, signing_pb2_grpc

_fork = multiprocessing.get_context("fork")
TOKEN_DIGESTS = 3000


@dataclass
class LoadResult:
    name: str
    operations: int  # signatures (or calls, for Authorize)
    seconds: float
    latencies: list[float]  # per call
    raw_around: float | None = None  # the raw HSM rate measured just before and just after (their mean)
    every_core_around: float | None = None  # the same of the raw rate on every core at once (hsm_rate)
    in_window: float | None = None  # what run_load's ``window_probe`` grew by from the window's start to its end
    client_cpu: float | None = None  # the load generator's CPU seconds in the window, where measured

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


@dataclass(frozen=True)
class Target:
    address: str
    credentials: tuple[bytes, bytes, bytes]  # root, key, certificate chain (PEM)
    account: str
    password: str
    credential: str
    workers: int = 1  # the server's worker processes, over which callers spread their connections

    def channel(self) -> grpc.Channel:
        """A channel with a connection of its own: the server's workers share the port, and the
        kernel hands each connection to one of them, so callers spread over the workers only
        when they do not share connections (gRPC otherwise pools them between channels)."""
        root, key, chain = self.credentials
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(root, key, chain),
                                   options=[("grpc.use_local_subchannel_pool", 1)])


CONNECT_ATTEMPTS = 50


def balanced_channel(target: Target, share: int, taken) -> grpc.Channel:
    """A connection to a worker serving fewer than ``share`` callers so far (``taken``: a
    shared array, callers per worker). The kernel hands connections to workers by a hash of
    their addresses: 8 connections split 4-4 over 2 workers in only 27 % of runs, and a 6-2
    split would measure the hash rather than the server. So a connection that reaches a full
    worker is closed and another opened (at most ``CONNECT_ATTEMPTS`` times), before the
    measured window."""
    channel = target.channel()
    for _ in range(CONNECT_ATTEMPTS):
        worker = info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=60).worker
        with taken.get_lock():
            if worker >= len(taken):
                return channel
            if taken[worker] < share:
                taken[worker] += 1
                return channel
        channel.close()
        channel = target.channel()
    return channel  # the kernel kept choosing full workers: keep what it gives


# A caller: given its connection (a gRPC channel, or what ``connect`` of run_load makes) and a
# name unique in the run, it does its setup (outside the measured window) and returns the call
# to repeat, which returns the operations it did.
Caller = Callable[[Any, Target, str], Callable[[], int]]


def _authorize(stub, target: Target, digests: list[bytes]) -> str:
    return stub.Authorize(signing_pb2.AuthorizeRequest(
        account=target.account, password=target.password, credential_id=target.credential,
        hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=digests), timeout=120).activation_token


def hash_signer(batch: int) -> Caller:
    """SignHash of ``batch`` digests per call, spending a token authorised beforehand."""
    def setup(channel: grpc.Channel, target: Target, name: str) -> Callable[[], int]:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        state = {"round": 0, "position": 0}

        def authorise() -> None:
            state["digests"] = [hashlib.sha256(f"{name}-{state['round']}-{i}".encode()).digest()
                                for i in range(TOKEN_DIGESTS)]
            state["token"], state["position"] = _authorize(stub, target, state["digests"]), 0
            state["round"] += 1

        def call() -> int:
            if state["position"] + batch > TOKEN_DIGESTS:  # rare: a fresh token, inside the window
                authorise()
            position = state["position"]
            stub.SignHash(signing_pb2.SignHashRequest(
                credential_id=target.credential, activation_token=state["token"],
                signature_algorithm="rsa-pkcs1v15-sha256", digests=state["digests"][position:position + batch]),
                timeout=60)
            state["position"] = position + batch
            return batch

        authorise()
        return call
    return setup


def authorizer(channel: grpc.Channel, target: Target, name: str) -> Callable[[], int]:
    """Authorize for one fresh digest per call."""
    stub = signing_pb2_grpc.SigningServiceStub(channel)
    counter = itertools.count()

    def call() -> int:
        _authorize(stub, target, [hashlib.sha256(f"{name}-{next(counter)}".encode()).digest()])
        return 1
    return call


def _client_process(target: Target, caller: Caller, threads: int, start_at: float, seconds: float, queue,
                    share: int, taken, connect) -> None:
    results: list[tuple[int, list[float]]] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        with connect(target, share, taken) as channel:  # made after the fork: gRPC objects never cross it
            call = caller(channel, target, f"{os.getpid()}-{index}")
            time.sleep(max(0.0, start_at - time.time()))
            done, latencies = 0, []
            while time.time() < start_at + seconds:
                began = time.perf_counter()
                done += call()
                latencies.append(time.perf_counter() - began)
        with lock:
            results.append((done, latencies))

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    queue.put((sum(d for d, _ in results), [x for _, lat in results for x in lat]))


def run_load(name: str, target: Target, caller: Caller, concurrency: int, seconds: float,
             max_processes: int = 4, setup_seconds: float = 3.0, connect=balanced_channel,
             window_probe: Callable[[], float] | None = None) -> LoadResult:
    """``concurrency`` callers, each with its own connection (``connect(target, share, taken)``, a
    context manager), spread over up to ``max_processes`` client processes, all measured over the
    same window (opened once every caller is set up). ``window_probe`` (a reading that grows, such
    as some processes' CPU seconds) is read as the window opens and as it closes, so that the
    callers' set-up (their Authorize calls) is left out: ``LoadResult.in_window``."""
    processes = min(concurrency, max_processes)
    per_process = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    queue = _fork.Queue()
    taken = _fork.Array("i", target.workers)  # callers per worker so far
    share = -(-concurrency // target.workers)
    start_at = time.time() + setup_seconds + concurrency * 0.15
    clients = [_fork.Process(target=_client_process, args=(target, caller, n, start_at, seconds, queue, share, taken, connect))
               for n in per_process]
    readings: list[float] = []
    running = list(clients)
    if window_probe:
        running.append(threading.Thread(target=_read_at, args=(window_probe, (start_at, start_at + seconds), readings)))
    for each in running:
        each.start()
    gathered = [queue.get(timeout=600) for _ in clients]
    for each in running:
        each.join()
    return LoadResult(name, sum(g[0] for g in gathered), seconds, [x for g in gathered for x in g[1]],
                      in_window=readings[1] - readings[0] if len(readings) == 2 else None)


def alternated(first: Callable[[float], LoadResult], second: Callable[[float], LoadResult],
               seconds: float) -> tuple[LoadResult, LoadResult]:
    """Two loads (each run for the seconds it is given) measured first, second, second, first, half
    the time each: a machine that speeds up or slows down during the pair weighs on both alike,
    where one after the other its drift would land on their ratio. Each result joins its halves."""
    halves: tuple[list[LoadResult], list[LoadResult]] = ([], [])
    for index in (0, 1, 1, 0):
        halves[index].append((first, second)[index](seconds / 2))
    return _joined(*halves[0]), _joined(*halves[1])


def _joined(a: LoadResult, b: LoadResult) -> LoadResult:
    in_window = None if a.in_window is None or b.in_window is None else a.in_window + b.in_window
    return LoadResult(a.name, a.operations + b.operations, a.seconds + b.seconds, a.latencies + b.latencies,
                      in_window=in_window)


def _read_at(probe: Callable[[], float], moments: tuple[float, ...], readings: list[float]) -> None:
    for moment in moments:
        time.sleep(max(0.0, moment - time.time()))
        readings.append(probe())
